"""``graph_as``'s cache of callers' Graphs: reused while the caller's token lives, bounded, and every Graph that
leaves it (evicted, expired, replaced) has its on-behalf-of credential closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import jwt
import pytest

from shared.adapters import on_behalf_of
from shared.adapters.on_behalf_of import UserTokens, graph_as
from shared.adapters.per_loop import PerLoop
from shared.adapters.settings import reset_settings_cache
from tests.conftest import sample_settings


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in sample_settings().items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    yield
    reset_settings_cache()


def caller_token(n: int, lives: float = 3600) -> str:
    """A token as graph_as sees it (auth checked it before): only its ``exp`` is read here."""
    return jwt.encode({"exp": int(time.time() + lives), "n": n}, "k" * 32, algorithm="HS256")


TOKENS = [caller_token(n) for n in range(5)]


async def closing_done() -> None:
    await asyncio.gather(*on_behalf_of._closing)


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[UserTokens]:
    """The UserTokens closed so far (each one still really closed)."""
    seen: list[UserTokens] = []
    real_close = UserTokens.close

    async def close(self: UserTokens) -> None:
        seen.append(self)
        await real_close(self)

    monkeypatch.setattr(UserTokens, "close", close)
    return seen


async def test_evicted_and_expired_graphs_are_closed(settings_env, closed, monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr(on_behalf_of, "_graphs",
                        PerLoop(lambda: on_behalf_of._CallerGraphs(2, 60, timer=lambda: now[0])))
    first = graph_as(TOKENS[1])
    assert graph_as(TOKENS[1]) is first  # one caller, one Graph
    second = graph_as(TOKENS[2])
    third = graph_as(TOKENS[3])  # full: the least recently used (the first) makes room
    await closing_done()
    assert closed == [first.tokens]
    assert graph_as(TOKENS[2]) is second and graph_as(TOKENS[3]) is third
    now[0] += 60  # their time in the cache is over
    graph_as(TOKENS[4])
    await closing_done()
    assert closed[1:] in ([second.tokens, third.tokens], [third.tokens, second.tokens])


async def test_a_graph_is_not_used_past_its_callers_token(settings_env, closed) -> None:
    expired = caller_token(5, lives=-1)  # auth lets a token a minute past its expiry through (clock skew)
    graph = graph_as(expired)
    again = graph_as(expired)
    assert again is not graph
    await closing_done()
    assert closed == [graph.tokens]
