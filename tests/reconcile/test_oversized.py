"""Appointments too large for a naive row, through the real reconcile (Graph sandbox, Azurite) and delivery:
storage limits are counted as Table storage counts them, nothing fails, and one oversized appointment never
blocks the others of its mailbox (issue 13)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.adapters import callback_client
from shared.adapters.storage import (
    ENTITY_MAX_BYTES,
    PROPERTY_MAX_UTF16_UNITS,
    TRANSACTION_MAX_BYTES,
    entity_size,
    utf16_units,
)
from shared.records import reconcile_state
from shared.records.outbox import TRUNCATION_MARKER, payload_properties, read_payload
from shared.records.reconcile_state import SNAPSHOT_PREFIX, Refused
from shared.workers.reconcile import reconcile
from testing.receiver import Receiver
from testing.rows import add_flow
from tests.delivery.conftest import run_worker
from tests.reconcile.test_reconcile import CLINIC, Bookings, hint, outbox, rows

LONG_NOTE = "Allergies and history. " * 1739 + "end"  # 40,000 characters
EMOJI_NOTE = "😀" * 9000  # 9,000 characters, 18,000 UTF-16 code units (twice in a 1:1 payload: 36,000)
assert len(LONG_NOTE) == 40_000


@pytest.fixture(scope="module")
def receiver() -> Any:
    with Receiver() as server:
        yield server


@pytest.fixture
async def mailbox(clean_env, sandbox, receiver) -> AsyncIterator[Bookings]:
    """A baselined mailbox with one flow per trigger, all pointing at the receiver."""
    with receiver._lock:
        receiver.received.clear()
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    for trigger in ("AppointmentCreated", "AppointmentUpdated", "AppointmentDeleted"):
        await add_flow(receiver.url(trigger), trigger=trigger)
    yield Bookings(sandbox)
    await callback_client.close_client()


def _customer(notes: str) -> list[dict[str, Any]]:
    return [{"@odata.type": "#microsoft.graph.bookingCustomerInformation", "name": "Walk In",
             "emailAddress": "walk.in@example.test", "notes": notes}]


async def _deliveries(receiver: Receiver, count: int) -> list[tuple[str, dict[str, Any]]]:
    await run_worker(lambda: len(receiver.requests()) >= count, timeout=60)
    got = [(r.flow, json.loads(r.body)) for r in receiver.requests()]
    assert len(got) == count, [(flow, body.get("AppointmentId")) for flow, body in got]
    return got


def _assert_rows_fit(entities: list[Any]) -> None:
    for entity in entities:
        assert entity_size(dict(entity)) <= ENTITY_MAX_BYTES
        for name, value in entity.items():
            if isinstance(value, str):
                assert utf16_units(value) <= PROPERTY_MAX_UTF16_UNITS, name


async def test_long_and_emoji_notes_next_to_normal_appointments(mailbox: Bookings, receiver: Receiver) -> None:
    normal_a = mailbox.create(minutes_from_now=24 * 60)
    long = mailbox.create(minutes_from_now=25 * 60, customers=_customer(LONG_NOTE), serviceNotes=LONG_NOTE)
    emoji = mailbox.create(minutes_from_now=26 * 60, customers=_customer(EMOJI_NOTE))
    normal_b = mailbox.create(minutes_from_now=27 * 60)
    ids = [normal_a["id"], long["id"], emoji["id"], normal_b["id"]]
    notes = {normal_a["id"]: "first visit", long["id"]: LONG_NOTE, emoji["id"]: EMOJI_NOTE,
             normal_b["id"]: "first visit"}

    assert await reconcile(hint(full_resync=True)) == "reconciled"
    _assert_rows_fit(await rows(SNAPSHOT_PREFIX) + await outbox())
    for appointment_id in ids:
        mailbox.update(appointment_id, serviceNotes="moved to room 2")
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    for appointment_id in ids:
        mailbox.cancel(appointment_id, "closed")
    assert await reconcile(hint(full_resync=True)) == "reconciled"

    stored = await outbox()
    _assert_rows_fit(stored)
    assert sorted((e["ChangeType"], e["AppointmentId"]) for e in stored) == sorted(
        (change, appointment_id) for change in ("Created", "Updated", "Cancelled") for appointment_id in ids)
    assert not any("PayloadCut" in e for e in stored)  # these fit whole: nothing was cut
    for event in stored:
        payload = read_payload(event)
        assert payload["CustomerNotes"] == payload["Customers"][0]["Notes"] == notes[event["AppointmentId"]]
    assert read_payload(next(e for e in stored if e["AppointmentId"] == long["id"]
                             and e["ChangeType"] == "Created"))["ServiceNotes"] == LONG_NOTE

    delivered = await _deliveries(receiver, 12)
    trigger_of = {"Created": "AppointmentCreated", "Updated": "AppointmentUpdated", "Cancelled": "AppointmentDeleted"}
    by_flow = {(flow, body["AppointmentId"]): body for flow, body in delivered}
    for change, trigger in trigger_of.items():
        for appointment_id in ids:
            body = by_flow[(trigger, appointment_id)]
            assert body["CustomerNotes"] == notes[appointment_id], (change, appointment_id)
    assert all(s["AppointmentId"] not in ids for s in await rows(SNAPSHOT_PREFIX))


async def test_a_payload_too_large_for_a_row_is_cut_visibly_and_delivered(mailbox: Bookings,
                                                                          receiver: Receiver) -> None:
    huge = "Ω" * 700_000  # 1.4 MB as UTF-16, twice in the payload: no row holds it
    normal = mailbox.create(minutes_from_now=24 * 60)
    big = mailbox.create(minutes_from_now=25 * 60, customers=_customer(huge))
    assert await reconcile(hint(full_resync=True)) == "reconciled"

    stored = await outbox()
    _assert_rows_fit(stored + await rows(SNAPSHOT_PREFIX))
    assert sorted(e["AppointmentId"] for e in stored) == sorted([normal["id"], big["id"]])
    (cut,) = [e for e in stored if e["AppointmentId"] == big["id"]]
    assert cut["PayloadCut"] == "CustomerNotes,Customers.*.Notes"
    payload = read_payload(cut)
    note = payload["CustomerNotes"]
    kept = note.index("…")
    assert note[:kept] == huge[:kept] and kept > 60_000  # cut evenly, most of what fits is kept
    assert note[kept:] == TRUNCATION_MARKER.format(len(huge) - kept)
    delivered = await _deliveries(receiver, 2)
    assert {body["AppointmentId"]: body["CustomerNotes"] for _, body in delivered}[big["id"]] == note

    # Unchanged: the cut snapshot does not look updated (fingerprints are Graph's, not the cut payload's).
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    assert len(await outbox()) == 2


async def test_large_appointments_are_spread_over_transactions_within_the_request_limit(
        mailbox: Bookings, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    commit = reconcile_state.commit

    async def measured(mailbox_: str, operations: list, etag: str, sync: Any) -> str:
        sizes.append(sum(entity_size(op[1]) for op in operations))
        snapshots = {op[1]["AppointmentId"] for op in operations if op[1]["RowKey"].startswith(SNAPSHOT_PREFIX)}
        events = {op[1]["AppointmentId"] for op in operations if op[1]["RowKey"].startswith("outbox:")}
        assert snapshots == events  # a snapshot and its event commit together
        return await commit(mailbox_, operations, etag, sync)

    monkeypatch.setattr(reconcile_state, "commit", measured)
    note = "x" * 60_000  # ≈ 240 KB per row (customer notes twice), ≈ 480 KB per appointment's pair of rows
    created = [mailbox.create(minutes_from_now=24 * 60 + 31 * i, customers=_customer(note)) for i in range(20)]
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    events = await outbox()
    assert sorted(e["AppointmentId"] for e in events) == sorted(c["id"] for c in created)
    assert len(sizes) >= 3 and max(sizes) < TRANSACTION_MAX_BYTES
    assert all(read_payload(e)["CustomerNotes"] == note for e in events)


def refuse_rows_of(appointment_id: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Table storage refuses every transaction holding this appointment's rows (400 InvalidInput); returns the
    real commit, to put back."""
    commit = reconcile_state.commit

    async def refusing(mailbox_: str, operations: list, etag: str, sync: Any) -> str:
        if any(op[1].get("AppointmentId") == appointment_id for op in operations):
            raise Refused(400, "InvalidInput")
        return await commit(mailbox_, operations, etag, sync)

    monkeypatch.setattr(reconcile_state, "commit", refusing)
    return commit


async def test_an_appointment_storage_refuses_does_not_block_the_others(
        mailbox: Bookings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    good = mailbox.create(minutes_from_now=24 * 60)
    bad = mailbox.create(minutes_from_now=25 * 60)
    commit = refuse_rows_of(bad["id"], monkeypatch)
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    assert [e["AppointmentId"] for e in await outbox()] == [good["id"]]
    assert "refused the rows of appointment" in caplog.text
    await _deliveries(receiver, 1)

    monkeypatch.setattr(reconcile_state, "commit", commit)  # storage takes it now: the next reconcile does
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    assert sorted(e["AppointmentId"] for e in await outbox()) == sorted([good["id"], bad["id"]])
    await _deliveries(receiver, 2)


def test_chunks_count_utf16_code_units_and_never_split_a_character() -> None:
    props = payload_properties({"CustomerNotes": EMOJI_NOTE, "Customers": [{"Notes": EMOJI_NOTE}]})
    chunks = [props[f"Payload{i}"] for i in range(props["PayloadChunks"])]
    assert len(chunks) == 2 and all(utf16_units(c) <= PROPERTY_MAX_UTF16_UNITS for c in chunks)
    assert all(c.encode("utf-8") for c in chunks)  # no lone surrogate anywhere
    assert read_payload(props)["CustomerNotes"] == EMOJI_NOTE


def test_a_lone_surrogate_becomes_a_replacement_character() -> None:
    props = payload_properties({"CustomerNotes": "bad \ud800 text"})
    assert read_payload(props)["CustomerNotes"] == "bad \ufffd text"


def test_thousands_of_customers_are_cut_to_what_a_row_holds() -> None:
    payload = {"Customers": [{"Name": f"customer {i}", "Notes": "n" * 40} for i in range(40_000)]}
    props = payload_properties(payload, {"PartitionKey": CLINIC, "RowKey": "outbox:x"})
    assert entity_size(props) <= ENTITY_MAX_BYTES and props["PayloadCut"] == "Customers"
    assert 0 < len(read_payload(props)["Customers"]) < 40_000
