"""The reconcile worker against the Graph sandbox and Azurite: exact events, nothing twice, nothing lost."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import azure.functions as func
import httpx
import pytest

from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.messages.mailbox_changes import change_message
from shared.records.mailbox import prefix_bounds
from shared.records.outbox import OUTBOX_PREFIX, payload_properties, read_payload
from shared.records.reconcile_state import CANCEL_REASON_PREFIX, SNAPSHOT_PREFIX
from shared.services import bookings as bookings_service
from shared.workers import reconcile as reconcile_worker
from shared.workers.reconcile import reconcile

CLINIC = "clinic@contoso.test"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"  # Graph's selfServiceAppointmentId for staff-made ones


class Bookings:
    """The sandbox's Graph, as a Bookings admin would change it."""

    def __init__(self, sandbox: Any) -> None:
        self.sandbox = sandbox
        self.http = httpx.Client(base_url=f"{sandbox.graph_url}/solutions/bookingBusinesses/{CLINIC}",
                                 headers=sandbox.graph_headers(), timeout=30)
        self.one_to_one = next(s for s in self._call("GET", "/services").json()["value"]
                               if s.get("maximumAttendeesCount", 1) == 1)

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response = self.http.request(method, path, **kw)
        response.raise_for_status()
        return response

    def create(self, minutes_from_now: int = 24 * 60, **fields: Any) -> dict:
        one_to_one = self.one_to_one
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=minutes_from_now)
        body = {"serviceId": one_to_one["id"],
                "startDateTime": {"dateTime": start.isoformat().replace("+00:00", ""), "timeZone": "UTC"},
                "endDateTime": {"dateTime": (start + timedelta(minutes=30)).isoformat().replace("+00:00", ""),
                                "timeZone": "UTC"},
                "customers": [{"@odata.type": "#microsoft.graph.bookingCustomerInformation",
                               "name": "Walk In", "emailAddress": "walk.in@example.test",
                               "notes": "first visit"}],
                "serviceNotes": "bring forms", **fields}
        return self._call("POST", "/appointments", json=body).json()

    def update(self, appointment_id: str, **fields: Any) -> None:
        self._call("PATCH", f"/appointments/{appointment_id}", json=fields)

    def cancel(self, appointment_id: str, message: str = "") -> None:
        self._call("POST", f"/appointments/{appointment_id}/cancel", json={"cancellationMessage": message})


async def rows(prefix: str) -> list[dict]:
    table = get_store().table(MAILBOX_TABLE)
    end = prefix_bounds(prefix)["hi"]
    query = f"PartitionKey eq '{CLINIC}' and RowKey ge '{prefix}' and RowKey lt '{end}'"
    return [e async for e in table.query_entities(query)]


async def outbox() -> list[dict]:
    return await rows(OUTBOX_PREFIX)


def hint(**kw: Any) -> dict:
    return dict(change_message(CLINIC, reason="test", **kw))


@pytest.fixture
async def baselined(clean_env, sandbox) -> Bookings:
    """A mailbox whose baseline is taken: what existed before is known, nothing was announced."""
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    assert await outbox() == []
    return Bookings(sandbox)


async def test_baseline_records_existing_appointments_silently(baselined) -> None:
    snapshots = await rows(SNAPSHOT_PREFIX)
    assert len(snapshots) >= 3  # the demo business's appointments
    assert await outbox() == []


async def test_created_updated_cancelled_each_once(baselined: Bookings) -> None:
    created = baselined.create()
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    events = await outbox()
    assert [(e["ChangeType"], e["AppointmentId"]) for e in events] == [("Created", created["id"])]
    payload = read_payload(events[0])
    assert payload["CustomerName"] == "Walk In" and payload["CustomerNotes"] == "first visit"
    assert payload["ServiceNotes"] == "bring forms" and payload["Duration"] == 30
    # Created through Graph = by staff: Graph's zero GUID in the self-service ids, its id in AppointmentId.
    assert payload["SelfServiceAppointmentId"] == payload["Id"] == ZERO_GUID
    assert payload["AppointmentId"] == created["id"]

    # The same state again: nothing new.
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    assert len(await outbox()) == 1

    baselined.update(created["id"], serviceNotes="bring forms and ID")
    await reconcile(hint(full_resync=True))
    events = await outbox()
    updated = [e for e in events if e["ChangeType"] == "Updated"]
    assert len(updated) == 1 and read_payload(updated[0])["ServiceNotes"] == "bring forms and ID"
    assert read_payload(updated[0])["AppointmentId"] == created["id"]

    baselined.cancel(created["id"], "customer is ill")
    await reconcile(hint(full_resync=True))
    cancelled = [e for e in await outbox() if e["ChangeType"] == "Cancelled"]
    assert len(cancelled) == 1
    last = read_payload(cancelled[0])
    assert last["CustomerName"] == "Walk In" and last["ServiceNotes"] == "bring forms and ID"
    assert last["CancelledBy"] == ""  # cancelled in Graph, not through our route: Graph records no canceller
    assert last["AppointmentId"] == created["id"] and last["SelfServiceAppointmentId"] == last["Id"] == ZERO_GUID
    assert not [s for s in await rows(SNAPSHOT_PREFIX) if s["AppointmentId"] == created["id"]]


async def test_a_self_service_booking_carries_its_own_self_service_id(baselined: Bookings) -> None:
    # The sandbox's stand-in for a customer booking on the booking page: Graph then has a real GUID.
    self_service_id = "6f1c2b7e-93a4-4d0f-8a51-2f9e0c4b7d13"
    created = baselined.create(selfServiceAppointmentId=self_service_id)
    await reconcile(hint(full_resync=True))
    (event,) = await outbox()
    payload = read_payload(event)
    assert payload["SelfServiceAppointmentId"] == payload["Id"] == self_service_id
    assert payload["AppointmentId"] == created["id"] != self_service_id


async def test_no_notes_of_its_own_are_no_notes_whatever_the_service_has(baselined: Bookings, sandbox) -> None:
    """Regression: an appointment without notes reported its service's notes and description."""
    service = sandbox.sandbox.state.business(CLINIC).services[baselined.one_to_one["id"]]
    service["notes"], service["additionalInformation"] = "Service-wide staff notes.", "Service-wide info."
    created = baselined.create(serviceNotes=None, additionalInformation=None)  # the sandbox is re-seeded next test
    await reconcile(hint(full_resync=True))
    (event,) = await outbox()
    payload = read_payload(event)
    assert payload["AppointmentId"] == created["id"]
    assert (payload["ServiceNotes"], payload["AdditionalInfo"]) == ("", "")


async def _store_as_before_appointment_id(appointment_id: str) -> dict:
    """Rewrite the appointment's snapshot as the version before AppointmentId stored it: no AppointmentId,
    the Graph id in Id/SelfServiceAppointmentId (staff-made). Fingerprints are untouched: they were the same."""
    (snap,) = [s for s in await rows(SNAPSHOT_PREFIX) if s["AppointmentId"] == appointment_id]
    old = read_payload(snap)
    del old["AppointmentId"]
    old["Id"] = old["SelfServiceAppointmentId"] = appointment_id
    await get_store().table(MAILBOX_TABLE).update_entity(
        {"PartitionKey": CLINIC, "RowKey": snap["RowKey"], **payload_properties(old)})
    return old


async def test_a_cancelled_from_a_snapshot_stored_before_appointment_id_carries_it(baselined: Bookings) -> None:
    created = baselined.create()
    await reconcile(hint(full_resync=True))
    old = await _store_as_before_appointment_id(created["id"])
    baselined.cancel(created["id"])
    await reconcile(hint(full_resync=True))
    (cancelled,) = [e for e in await outbox() if e["ChangeType"] == "Cancelled"]
    payload = read_payload(cancelled)
    assert payload["AppointmentId"] == created["id"]
    assert payload["SelfServiceAppointmentId"] == payload["Id"] == ZERO_GUID
    assert {k: v for k, v in payload.items() if k not in ("AppointmentId", "Id", "SelfServiceAppointmentId")} == {
        k: v for k, v in old.items() if k not in ("Id", "SelfServiceAppointmentId")}


async def test_an_upgrade_does_not_make_stored_appointments_look_updated(baselined: Bookings) -> None:
    created = baselined.create()
    await reconcile(hint(full_resync=True))
    await _store_as_before_appointment_id(created["id"])
    baselined.update(created["id"], serviceNotes="bring forms")  # touched: read again, nothing visible changed
    await reconcile(hint(full_resync=True))
    assert [e["ChangeType"] for e in await outbox()] == ["Created"]
    # …and the stored payload is the current one now, ready for a Cancelled event.
    (snap,) = [s for s in await rows(SNAPSHOT_PREFIX) if s["AppointmentId"] == created["id"]]
    stored = read_payload(snap)
    assert stored["AppointmentId"] == created["id"] and stored["SelfServiceAppointmentId"] == ZERO_GUID


async def test_cancel_reason_recorded_by_our_api_reaches_the_event(baselined: Bookings) -> None:
    created = baselined.create()
    await reconcile(hint(full_resync=True))
    await get_store().table(MAILBOX_TABLE).upsert_entity(
        {"PartitionKey": CLINIC, "RowKey": f"{CANCEL_REASON_PREFIX}{created['id']}", "Reason": "double booked",
         "CancelledBy": "admin@contoso.test"})
    baselined.cancel(created["id"], "double booked")
    await reconcile(hint(full_resync=True))
    cancelled = [e for e in await outbox() if e["ChangeType"] == "Cancelled"]
    assert read_payload(cancelled[0])["CancelReason"] == "double booked"
    assert read_payload(cancelled[0])["CancelledBy"] == "admin@contoso.test"


@pytest.fixture
def large_mailbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the mailbox's horizon listed in more pages than a whole listing is worth for one event: a hint
    about one event then reads the event and lists a narrow window around it."""
    monkeypatch.setattr(reconcile_worker, "WHOLE_LISTING_MAX_PAGES", 0)


async def test_narrow_window_for_a_single_created_event(baselined: Bookings, sandbox, large_mailbox) -> None:
    created = baselined.create(minutes_from_now=3 * 24 * 60)
    events = httpx.get(f"{sandbox.graph_url}/users/{CLINIC}/events", headers=sandbox.graph_headers()).json()["value"]
    newest = max(events, key=lambda e: e.get("createdDateTime", ""))
    sandbox.control("DELETE", "requests")
    await reconcile(hint(changes=[{"changeType": "created", "eventId": newest["id"]}]))
    assert [(e["ChangeType"], e["AppointmentId"]) for e in await outbox()] == [("Created", created["id"])]
    views = [r for r in sandbox.requests() if r["path"].endswith("/calendarView")]
    assert len(views) == 1
    query = dict(parse_qsl(views[0]["query"]))
    start, end = (datetime.fromisoformat(query[k].replace("Z", "+00:00")) for k in ("start", "end"))
    # A narrow window around the event (30 minutes and a margin), not the whole horizon.
    assert end - start < timedelta(hours=1)
    assert start > datetime.now(UTC) + timedelta(days=2)


async def test_a_hint_in_a_mailbox_listed_in_one_page_lists_the_whole_horizon_without_the_event(
        baselined: Bookings, sandbox) -> None:
    """The baseline listed the clinic's horizon in one page: a hint about one event costs one listing of the
    whole horizon and the GET of the new appointment (no GET of the event, no lookups: they are cached), and
    it covers every hint received before it."""
    sync = await get_store().table(MAILBOX_TABLE).get_entity(CLINIC, "sync")
    assert sync["HorizonPages"] == 1
    created = baselined.create(minutes_from_now=3 * 24 * 60)
    events = httpx.get(f"{sandbox.graph_url}/users/{CLINIC}/events", headers=sandbox.graph_headers()).json()["value"]
    newest = max(events, key=lambda e: e.get("createdDateTime", ""))
    earlier = hint(changes=[{"changeType": "updated", "eventId": "another"}])
    await asyncio.sleep(2.5)  # beyond the coverage margin
    sandbox.control("DELETE", "requests")
    await reconcile(hint(changes=[{"changeType": "created", "eventId": newest["id"]}]))
    assert [(e["ChangeType"], e["AppointmentId"]) for e in await outbox()] == [("Created", created["id"])]
    calls = [r["path"] for r in sandbox.requests() if "oauth2" not in r["path"]]
    assert len(calls) == 2 and calls[0].endswith("/calendarView")
    assert calls[1].endswith(f"/appointments/{created['id']}")
    query = dict(parse_qsl(next(r for r in sandbox.requests() if r["path"].endswith("/calendarView"))["query"]))
    end = datetime.fromisoformat(query["end"].replace("Z", "+00:00"))
    assert end > datetime.now(UTC) + timedelta(days=170)  # the horizon (RESYNC_HORIZON_DAYS), not a window
    assert await reconcile(earlier) == "covered"


async def test_a_booking_beyond_the_horizon_is_found_by_the_hinted_event(baselined: Bookings, sandbox) -> None:
    """A mailbox whose horizon lists in one page takes the whole-horizon listing for a hint, but a booking
    made years ahead lies beyond it: finding nothing new, the reconcile reads the hinted event and compares a
    window around it, so the booking is not lost."""
    created = baselined.create(minutes_from_now=3 * 365 * 24 * 60)
    events = httpx.get(f"{sandbox.graph_url}/users/{CLINIC}/events", headers=sandbox.graph_headers()).json()["value"]
    newest = max(events, key=lambda e: e.get("createdDateTime", ""))
    await asyncio.sleep(2.5)  # beyond the coverage margin of the baseline
    await reconcile(hint(changes=[{"changeType": "created", "eventId": newest["id"]}]))
    assert [(e["ChangeType"], e["AppointmentId"]) for e in await outbox()] == [("Created", created["id"])]


async def test_lookups_are_read_again_when_an_appointment_names_an_id_they_lack(baselined: Bookings,
                                                                                  sandbox) -> None:
    """Services, staff and questions stay cached; an appointment naming a staff member the cache lacks (one
    added since) makes the reconcile read them again, and its payload names the staff member."""
    def lookup_reads() -> int:
        return len([r for r in sandbox.requests() if r["path"].endswith(("/services", "/staffMembers",
                                                                         "/customQuestions"))])

    staff = httpx.get(f"{sandbox.graph_url}/solutions/bookingBusinesses/{CLINIC}/staffMembers",
                      headers=sandbox.graph_headers()).json()["value"]
    sandbox.control("DELETE", "requests")
    baselined.create(minutes_from_now=2 * 24 * 60, staffMemberIds=[staff[0]["id"]])
    await reconcile(hint(full_resync=True))
    assert lookup_reads() == 0  # cached by the baseline
    cached = bookings_service._lookups[CLINIC]
    # As before the staff member was added:
    bookings_service._lookups[CLINIC] = replace(cached, lookups={**cached.lookups, "staff": []})
    second = baselined.create(minutes_from_now=3 * 24 * 60, staffMemberIds=[staff[0]["id"]])
    await reconcile(hint(full_resync=True))
    assert lookup_reads() == 3
    (event,) = [e for e in await outbox() if e["AppointmentId"] == second["id"]]
    assert [m["Id"] for m in read_payload(event)["StaffMembers"]] == [staff[0]["id"]]
    assert read_payload(event)["StaffMembers"][0]["DisplayName"] == staff[0]["displayName"]


async def test_concurrent_reconciles_emit_each_event_once(baselined: Bookings) -> None:
    for _ in range(3):
        baselined.create()
    outcomes = await asyncio.gather(*(reconcile(hint(full_resync=True)) for _ in range(8)))
    assert outcomes.count("reconciled") >= 1
    assert len(await outbox()) == 3


async def test_a_retried_hint_fans_out_what_its_failed_run_committed(baselined: Bookings, monkeypatch) -> None:
    """Fault injection: storage fails after the commit, before fan-out. The retry derives nothing (the
    snapshot moved), so it fans out the rows left ``pending`` itself; a first run does not look for them."""
    created = baselined.create()
    real = reconcile_worker.fan_out

    async def storage_gone(*args: Any, **kwargs: Any) -> int:
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(reconcile_worker, "fan_out", storage_gone)
    with pytest.raises(ConnectionResetError):
        await reconcile(hint(full_resync=True))
    monkeypatch.setattr(reconcile_worker, "fan_out", real)
    assert [(e["AppointmentId"], e["State"]) for e in await outbox()] == [(created["id"], "pending")]
    await reconcile(hint(full_resync=True))
    assert [e["State"] for e in await outbox()] == ["pending"]
    again = func.queue.QueueMessage(id="again", body=json.dumps(hint(full_resync=True)).encode(), dequeue_count=2)
    await reconcile_worker.handle_message(again)
    assert [e["State"] for e in await outbox()] == ["fannedOut"]


async def test_a_burst_of_hints_costs_a_few_listings(baselined: Bookings, sandbox) -> None:
    created = baselined.create()
    sandbox.control("DELETE", "requests")
    hints = [hint(changes=[{"changeType": "updated", "eventId": "unknown"}], full_resync=True) for _ in range(50)]
    outcomes = [await reconcile(h) for h in hints[:1]]
    # The burst's first listing takes 2 s, as a large mailbox's does: the other 48 meet its lease. (With an
    # instant sandbox, on a loaded machine some started only after it ended, and listed again.)
    sandbox.add_fault(method="GET", path="/v1.0/solutions/bookingBusinesses/*/calendarView*", latencyMs=2000,
                      count=1)
    outcomes += await asyncio.gather(*(reconcile(h) for h in hints[1:]))
    listings = [r for r in sandbox.requests() if r["path"].endswith("/calendarView")]
    assert len(listings) <= 3, outcomes
    assert [e["AppointmentId"] for e in await outbox()] == [created["id"]]


async def test_more_changes_than_one_transaction_holds(baselined: Bookings) -> None:
    for i in range(60):  # 60 creates = 120 operations: two transactions
        baselined.create(minutes_from_now=24 * 60 + i * 31)
    assert await reconcile(hint(full_resync=True)) == "reconciled"
    assert len(await outbox()) == 60


async def test_a_narrow_reconcile_does_not_cover_hints_about_other_events(baselined: Bookings, sandbox,
                                                                        large_mailbox) -> None:
    """Regression: a hint about event B, received before a narrow reconcile of event A started, was
    taken as covered by it — and B's appointment was never read (found by bench/end_to_end.py)."""
    first = baselined.create(minutes_from_now=2 * 24 * 60)
    second = baselined.create(minutes_from_now=5 * 24 * 60)
    events = httpx.get(f"{sandbox.graph_url}/users/{CLINIC}/events", headers=sandbox.graph_headers()).json()["value"]
    by_start = sorted(events, key=lambda e: e["start"]["dateTime"])
    event_a = next(e for e in by_start if e["start"]["dateTime"].startswith(first["startDateTime"]["dateTime"][:16]))
    event_b = next(e for e in by_start if e["start"]["dateTime"].startswith(second["startDateTime"]["dateTime"][:16]))
    hint_b = hint(changes=[{"changeType": "created", "eventId": event_b["id"]}])  # received first…
    await asyncio.sleep(2.5)  # …well before the reconcile of A starts (beyond the coverage margin)
    await reconcile(hint(changes=[{"changeType": "created", "eventId": event_a["id"]}]))
    assert await reconcile(hint_b) == "reconciled"
    assert sorted(e["AppointmentId"] for e in await outbox()) == sorted([first["id"], second["id"]])


async def test_a_deferred_hint_comes_back_as_a_full_reconcile(baselined: Bookings, azurite) -> None:
    import base64
    import json as jsonlib
    from datetime import UTC, datetime, timedelta

    from azure.storage.queue import QueueClient

    table = get_store().table(MAILBOX_TABLE)
    await table.update_entity({"PartitionKey": CLINIC, "RowKey": "sync",
                               "LeaseUntil": datetime.now(UTC) + timedelta(seconds=1)})  # someone is busy
    assert await reconcile(hint(changes=[{"changeType": "updated", "eventId": "x"}])) == "deferred"
    await asyncio.sleep(3)  # the lease's rest (1 s) and up to 1.5 s of jitter
    client = QueueClient.from_connection_string(azurite.connection_string, "mailbox-changes")
    (message,) = [jsonlib.loads(base64.b64decode(m.content)) for m in client.receive_messages()]
    assert message["fullResync"] is True and message["changes"] == [{"changeType": "updated", "eventId": "x"}]


def queued_hints(azurite: Any) -> list[dict]:
    import base64
    import json as jsonlib

    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(azurite.connection_string, "mailbox-changes")
    return [jsonlib.loads(base64.b64decode(m.content)) for m in client.peek_messages(max_messages=32)]


async def test_graph_throttling_sends_the_hint_back_after_retry_after_without_failing(baselined, sandbox,
                                                                                      azurite) -> None:
    """429/503 storms must not spend dequeue attempts (the poison queue would end it): the hint comes back as
    a full reconcile after Retry-After, and the mailbox is free for it."""
    from datetime import UTC, datetime

    created = baselined.create()
    fault = sandbox.add_fault(method="GET", path="/v1.0/solutions/bookingBusinesses/*/calendarView*", status=503,
                              retryAfter=1, count=None)
    assert await reconcile(hint(changes=[{"changeType": "created", "eventId": "e1"}])) == "throttled"
    assert await outbox() == [] and queued_hints(azurite) == []  # not visible yet: it waits out Retry-After
    sync = await get_store().table(MAILBOX_TABLE).get_entity(CLINIC, "sync")
    assert sync["LeaseUntil"] <= datetime.now(UTC)  # released: the retry need not wait for the lease
    await asyncio.sleep(2.6)  # Retry-After 1 s plus up to half of it as jitter, rounded
    (again,) = queued_hints(azurite)
    assert again["fullResync"] is True and again["attempt"] == 1
    sandbox.control("DELETE", f"faults/{fault['id']}")
    assert await reconcile(again) == "reconciled"
    assert [(e["ChangeType"], e["AppointmentId"]) for e in await outbox()] == [("Created", created["id"])]


async def test_a_throttled_hint_gives_way_to_the_resync_after_its_last_attempt(baselined, sandbox, azurite,
                                                                               monkeypatch) -> None:
    from shared.workers import reconcile as worker

    monkeypatch.setattr(worker, "MAX_THROTTLED_RETRIES", 2)
    sandbox.add_fault(method="GET", path="/v1.0/solutions/bookingBusinesses/*/calendarView*", status=429,
                      retryAfter=0, count=None)
    outcome = await reconcile({**hint(full_resync=True), "attempt": 2})
    assert outcome == "throttled, left to the resync" and queued_hints(azurite) == []


async def test_the_lease_is_renewed_while_a_slow_listing_runs(baselined, sandbox, monkeypatch) -> None:
    """Scaled down: a 5 s lease and a 10 s listing. Without renewal, the other workers would take the mailbox
    over half-way and only the last one would commit. (Shorter leases were lost on a loaded machine, where one
    storage write can take seconds.)"""
    from shared.workers import reconcile as worker

    monkeypatch.setattr(worker, "LEASE_SECONDS", 5)
    created = baselined.create()
    sandbox.add_fault(method="GET", path="/v1.0/solutions/bookingBusinesses/*/calendarView*", latencyMs=10000,
                      count=1)

    async def later(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return await reconcile(hint(full_resync=True))

    outcomes = await asyncio.gather(later(0), later(3.0), later(6.0), later(9.0))
    assert outcomes[0] == "reconciled" and set(outcomes[1:]) <= {"deferred", "covered"}, outcomes
    assert [(e["ChangeType"], e["AppointmentId"]) for e in await outbox()] == [("Created", created["id"])]
