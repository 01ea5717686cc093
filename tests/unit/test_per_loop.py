"""``PerLoop``: one value per running event loop, made on first use there, remade when stale, forgotten on pop."""

from __future__ import annotations

import asyncio
import gc
import itertools

from shared.adapters.per_loop import PerLoop


def counter() -> PerLoop[list[int]]:
    numbers = itertools.count()
    return PerLoop(lambda: [next(numbers)])


def test_one_value_per_loop_made_once() -> None:
    per_loop = counter()

    async def twice() -> tuple[list[int], list[int]]:
        return per_loop.get(), per_loop.get()

    first, again = asyncio.run(twice())
    assert first is again and first == [0]
    other, _ = asyncio.run(twice())
    assert other == [1] and other is not first


def test_a_stale_value_is_made_again() -> None:
    per_loop: PerLoop[dict[str, bool]] = PerLoop(lambda: {"closed": False}, stale=lambda v: v["closed"])

    async def run() -> None:
        value = per_loop.get()
        assert per_loop.get() is value
        value["closed"] = True
        fresh = per_loop.get()
        assert fresh is not value and not fresh["closed"]
        assert per_loop.get() is fresh

    asyncio.run(run())


def test_pop_forgets_the_loops_value() -> None:
    per_loop = counter()

    async def run() -> None:
        assert per_loop.pop() is None
        value = per_loop.get()
        assert per_loop.pop() is value
        assert per_loop.pop() is None
        assert per_loop.get() == [1]

    asyncio.run(run())


def test_set_gives_the_loop_a_value_and_only_that_loop() -> None:
    per_loop = counter()

    async def set_then_get() -> list[int]:
        per_loop.set([42])
        return per_loop.get()

    assert asyncio.run(set_then_get()) == [42]
    assert asyncio.run(_get(per_loop)) == [0]  # another loop: its own value, from the factory


async def _get(per_loop: PerLoop[list[int]]) -> list[int]:
    return per_loop.get()


def test_a_closed_loops_value_goes_with_it() -> None:
    per_loop = counter()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_get(per_loop))
    assert len(per_loop._values) == 1
    loop.close()
    del loop
    gc.collect()
    assert len(per_loop._values) == 0
