"""The ``idem:`` rows (shared.records.idempotency) on Azurite: a key is held, booked, reused only for the same
request, taken over (to look first) once its holder's lease ran out or Graph left it uncertain, and gone a day on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.records import idempotency
from shared.records.mailbox import mailbox_table

MAILBOX = "keys@contoso.test"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


async def test_a_key_books_once_then_answers_with_its_appointment(clean_env) -> None:
    held = await idempotency.claim(MAILBOX, "k1", "h1", NOW)
    assert (held.state, held.look_first) == (idempotency.BOOKING, False)
    with pytest.raises(idempotency.KeyInUse) as busy:  # its holder is booking now
        await idempotency.claim(MAILBOX, "k1", "h1", NOW + timedelta(seconds=10))
    assert busy.value.seconds == idempotency.LEASE_SECONDS - 10 + 1
    await idempotency.settle(held, "AAMk-1")
    again = await idempotency.claim(MAILBOX, "k1", "h1", NOW + timedelta(hours=1))
    assert (again.state, again.appointment_id) == (idempotency.BOOKED, "AAMk-1")
    with pytest.raises(idempotency.KeyReused):
        await idempotency.claim(MAILBOX, "k1", "another request", NOW + timedelta(hours=1))


async def test_a_lapsed_or_uncertain_key_is_taken_over_to_look_first(clean_env) -> None:
    await idempotency.claim(MAILBOX, "k2", "h2", NOW)  # its holder died mid-booking
    taken = await idempotency.claim(MAILBOX, "k2", "h2", NOW + timedelta(seconds=idempotency.LEASE_SECONDS + 1))
    assert (taken.state, taken.look_first) == (idempotency.BOOKING, True)
    await idempotency.leave_uncertain(taken)  # Graph did not say
    looked = await idempotency.claim(MAILBOX, "k2", "h2", datetime.now(UTC))
    assert looked.look_first
    await idempotency.release(looked)  # Graph said no: the key is free again
    assert not (await idempotency.claim(MAILBOX, "k2", "h2", datetime.now(UTC))).look_first


async def test_keys_live_a_day_and_are_pruned(clean_env) -> None:
    for n in range(3):
        await idempotency.settle(await idempotency.claim(MAILBOX, f"old-{n}", "h", NOW), f"AAMk-{n}")
    later = NOW + timedelta(hours=idempotency.KEY_HOURS, seconds=1)
    fresh = await idempotency.claim(MAILBOX, "old-0", "a new request", later)  # expired: the key starts anew
    assert (fresh.state, fresh.look_first) == (idempotency.BOOKING, False)
    assert await idempotency.prune(MAILBOX, later) == 2
    left = [e["RowKey"] async for e in mailbox_table().query_entities("PartitionKey eq @pk",
                                                                     parameters={"pk": MAILBOX})]
    assert left == [idempotency.row_key("old-0")]
