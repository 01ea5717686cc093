"""What cannot be used to flood (issue 25, item 4), reproduced against Azurite and a local receiver: a receiver
answering ``503 Retry-After: 1`` to everything, many test events to one flow (also from two instances), two
replay-alls at the same moment, and a long dead-letter list.

Once: 1,000 test events were accepted in 18 s; 50 test events to a callback answering 503 with ``Retry-After: 1``
caused 1,050 POSTs in 31 s, sustainable for 24 h; two concurrent replay-alls delivered each letter twice; 300 dead
letters were one 149 KB answer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest

from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.contracts import events
from shared.endpoints import dead_letters as deadletter_api
from shared.endpoints import test_events as test_event_api
from shared.messages import deliveries
from shared.records import test_event_limit
from shared.records.dead_letters import DeadLetters, public_id
from shared.services import dead_letters as dead_letter_service
from shared.workers import delivery
from testing.instances import in_another_instance
from testing.receiver import Reply
from testing.rows import CLINIC, add_event, add_flow
from tests.delivery.conftest import queued, run_worker, set_env
from tests.delivery.test_delivery import events_named

HOUR = 3600.0


def table():
    return get_store().table(MAILBOX_TABLE)


@pytest.fixture
def sandboxed(env, graph_env, receiver, monkeypatch) -> dict[str, str]:
    """Graph and Entra in the sandbox (the routes' sign-in and administrator rule)."""
    set_env(monkeypatch, PUBLIC_BASE_URL=receiver.base_url)
    return graph_env


@pytest.fixture
def real_schedule(monkeypatch) -> None:
    """The retry schedule as shipped (the ``env`` fixture turns its waits off for the other tests)."""
    for name, value in _SHIPPED.items():
        monkeypatch.setattr(delivery, name, value)


_SHIPPED = {name: getattr(delivery, name) for name in ("BACKOFF_BASE_SECONDS", "RETRY_AFTER_FLOOR_SECONDS",
                                                       "PACED_SECONDS")}


def most_in_an_hour(times: list[float]) -> int:
    """The most attempts in any hour-long window of ``times`` (sorted seconds)."""
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= HOUR:
            first += 1
        most = max(most, last - first + 1)
    return most


# --- the retry schedule -------------------------------------------------------------------------------------

async def test_a_receiver_answering_503_retry_after_1_gets_a_bounded_number_of_posts(
        env, real_schedule, receiver, monkeypatch, caplog) -> None:
    """The reproduction, on a simulated clock: each retry the worker queues is taken at once, and the clock moves
    on by the delay it asked for (the message's ``firstAttemptAt`` moves back by as much). Every attempt is a real
    POST to a receiver answering ``503 Retry-After: 1``, until the event is dead-lettered after
    ``DELIVERY_RETRY_HOURS``."""
    caplog.set_level(logging.INFO, logger="shared")
    flow = await add_flow(receiver.url("busy"))
    receiver.plan("busy", *[Reply(503, {"Retry-After": "1"})] * 2000)
    retries: list[tuple[dict, float]] = []

    async def captured(item: dict, delay: float = 0.0) -> None:
        retries.append((item, delay))

    monkeypatch.setattr(deliveries, "enqueue", captured)
    item = deliveries.new_message(CLINIC, await add_event(), flow.webhook_id)
    clock, times = 0.0, []
    while len(times) < 1000:
        times.append(clock)
        await delivery.attempt(item)
        if not retries:
            break  # dead-lettered
        item, delay = retries.pop()
        clock += delay
        item = {**item, "firstAttemptAt": (datetime.fromisoformat(item["firstAttemptAt"])
                                           - timedelta(seconds=delay)).isoformat()}
    window = 24 * HOUR  # DELIVERY_RETRY_HOURS in the sample settings
    # The whole window (less the test's own seconds of real time), not 1,000 POSTs in a few minutes.
    assert clock >= window - 120, f"{len(times)} POSTs in {clock:.0f} simulated s"
    assert len(receiver.requests("busy")) == len(times)
    bound = delivery.FAST_ATTEMPTS + delivery.MAX_ATTEMPTS_PER_HOUR
    assert most_in_an_hour(times) <= bound
    after_the_fast_ones = times[delivery.FAST_ATTEMPTS:-1]  # the last one: at the window's end, whatever the pace
    assert most_in_an_hour(after_the_fast_ones) <= delivery.MAX_ATTEMPTS_PER_HOUR
    assert len(times) <= delivery.FAST_ATTEMPTS + 24 * delivery.MAX_ATTEMPTS_PER_HOUR + 1
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]  # the last: at the window's end
    assert min(gaps) >= delivery.RETRY_AFTER_FLOOR_SECONDS  # Retry-After: 1 is honoured as 30 s
    (letter,) = await DeadLetters(table()).list(CLINIC)
    assert (letter.reason, letter.attempts) == ("retryWindowExhausted", len(times))
    # One warning for the whole run (it took seconds of real time), not one per attempt; telemetry has each.
    warnings = [r for r in caplog.records if r.name == "shared.workers.delivery" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "at most one warning per flow" in warnings[0].getMessage()
    assert len(events_named(caplog, events.DELIVERY_FAILED)) == len(times)


async def test_the_warning_comes_again_after_its_interval_with_what_went_unlogged(
        env, receiver, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    flow = await add_flow(receiver.url("down"))
    receiver.plan("down", *[503] * 10)
    monkeypatch.setattr(deliveries, "enqueue", lambda item, delay=0.0: asyncio.sleep(0))
    for _ in range(3):  # three events of one flow: one warning
        await delivery.attempt(deliveries.new_message(CLINIC, await add_event(), flow.webhook_id))
    monkeypatch.setattr(delivery, "WARNING_INTERVAL_SECONDS", 0.0)
    await delivery.attempt(deliveries.new_message(CLINIC, await add_event(), flow.webhook_id))
    warnings = [r.getMessage() for r in caplog.records if r.name == "shared.workers.delivery"
                and r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "2 more failed attempt(s) to this flow" in warnings[1]


# --- test events --------------------------------------------------------------------------------------------

def event_request(webhook_id: str, token: str, language: str = "en") -> func.HttpRequest:
    route = f"v1/bookingBusinesses/{CLINIC}/webhooks/{webhook_id}/test"
    return func.HttpRequest("POST", f"http://127.0.0.1/api/{route}", body=b"", params={},
                            headers={"authorization": f"Bearer {token}", "accept-language": language},
                            route_params={"smtp": CLINIC, "webhookId": webhook_id})


async def test_test_events_beyond_the_limit_are_answered_429(sandboxed, sandbox, receiver) -> None:
    flow = await add_flow(receiver.url("tested"))
    other = await add_flow(receiver.url("other"), trigger="AppointmentUpdated")
    token = sandbox.user_token("admin@contoso.test")
    answers = await asyncio.gather(*(test_event_api.handle(event_request(flow.webhook_id, token))
                                     for _ in range(40)))
    assert sorted(a.status_code for a in answers) == [202] * test_event_limit.BURST + [429] * (
        40 - test_event_limit.BURST)
    refused = next(a for a in answers if a.status_code == 429)
    error = json.loads(refused.get_body())["error"]
    assert error["code"] == "TooManyTestEvents" and set(error) == {"code", "message", "remedy", "correlationId"}
    assert 1 <= int(refused.headers["Retry-After"]) <= test_event_limit.INTERVAL.total_seconds() + 1
    assert f"{int(refused.headers['Retry-After'])} seconds" in error["remedy"]
    assert len(await queued()) == test_event_limit.BURST  # nothing stored or sent for a refused one
    japanese = await test_event_api.handle(event_request(flow.webhook_id, token, "ja"))
    assert japanese.status_code == 429 and "テスト イベント" in json.loads(japanese.get_body())["error"]["message"]
    # The limit is per flow: another flow of the business still gets its own.
    assert (await test_event_api.handle(event_request(other.webhook_id, token))).status_code == 202


async def test_two_instances_share_one_allowance(env, receiver) -> None:
    flow = await add_flow(receiver.url("shared"))

    async def burst() -> list[float]:
        return list(await asyncio.gather(*(test_event_limit.take(CLINIC, flow.webhook_id) for _ in range(10))))

    mine, theirs = await asyncio.gather(burst(), in_another_instance(burst))
    allowed = [w for w in mine + theirs if w == 0]
    assert len(allowed) == test_event_limit.BURST, (mine, theirs)
    assert all(0 < w <= test_event_limit.INTERVAL.total_seconds() for w in mine + theirs if w)
    assert await in_another_instance(lambda: test_event_limit.take(CLINIC, flow.webhook_id)) > 0
    # Time passes (the row's time moved back rather than waiting): the allowance is there again, for both, and
    # columns of flows whose allowance is full go from the row.
    column = "F" + flow.webhook_id.replace("-", "")
    gone = "F" + "0" * 32
    await table().update_entity({"PartitionKey": CLINIC, "RowKey": test_event_limit.ROW_KEY,
                                 column: datetime.now(UTC) - timedelta(seconds=1),
                                 gone: datetime.now(UTC) - timedelta(seconds=1)})
    assert await in_another_instance(lambda: test_event_limit.take(CLINIC, flow.webhook_id)) == 0
    row = await table().get_entity(CLINIC, test_event_limit.ROW_KEY)
    assert [name for name in row if name.startswith("F")] == [column]


# --- dead letters: concurrent replays, paging ---------------------------------------------------------------

async def dead_letters_of(flow: Any, count: int) -> list[str]:
    """``count`` dead letters of ``flow``, each with its stored event (as the delivery worker leaves them)."""
    store = DeadLetters(table())
    events_ = []
    for number in range(count):
        event = await add_event(number=number)
        await store.record(CLINIC, event, flow.webhook_id, trigger="AppointmentCreated", change_type="Created",
                           appointment_id=f"appt-{number}", reason="rejected", status=400, error_code="Rejected",
                           error_text="no", attempts=1, first_attempt_at=datetime.now(UTC), correlation_id="c")
        events_.append(event)
    return events_


async def test_two_concurrent_replay_alls_deliver_each_letter_once(env, receiver) -> None:
    flow = await add_flow(receiver.url("replayed"))
    events_ = await dead_letters_of(flow, 12)
    mine, theirs = await asyncio.gather(dead_letter_service.replay_all(CLINIC),
                                        in_another_instance(lambda: dead_letter_service.replay_all(CLINIC)))
    replayed = [letter.event_id for letter, outcome in mine + theirs if outcome == "replayed"]
    assert sorted(replayed) == sorted(events_)  # each by one of them
    await run_worker(lambda: len(receiver.requests("replayed")) >= len(events_))
    await asyncio.sleep(0.5)
    assert await queued() == []
    posted = [r.headers["x-bookings-event-id"] for r in receiver.requests("replayed")]
    assert sorted(posted) == sorted(events_)  # once each
    assert await DeadLetters(table()).list(CLINIC) == []


async def test_a_claimed_letter_is_left_to_its_replay_until_the_claim_lapses(sandboxed, sandbox, receiver) -> None:
    flow = await add_flow(receiver.url("claimed"))
    held, free = await dead_letters_of(flow, 2)
    store = DeadLetters(table())
    letter = await store.get(CLINIC, held, flow.webhook_id)
    assert await store.claim(letter, datetime.now(UTC)) is not None  # another replay, in flight
    assert await store.claim(letter, datetime.now(UTC)) is None  # its ETag moved on
    token = sandbox.user_token("admin@contoso.test")
    route = f"v1/bookingBusinesses/{CLINIC}/deadletters/{letter.id}/replay"
    one = await deadletter_api.replay_dead_letter(func.HttpRequest(
        "POST", f"http://127.0.0.1/api/{route}", headers={"authorization": f"Bearer {token}"}, params={},
        route_params={"smtp": CLINIC, "id": letter.id}, body=b""))
    assert one.status_code == 409 and json.loads(one.get_body())["error"]["code"] == "DeadLetterBeingReplayed"
    outcomes = await dead_letter_service.replay_all(CLINIC)
    assert [(d.event_id, outcome) for d, outcome in outcomes] == [(free, "replayed")]
    assert [m["eventId"] for m in await queued()] == [free]
    # A claim whose replay died lapses, and the letter is replayable again.
    await table().update_entity({"PartitionKey": CLINIC, "RowKey": f"deadletter:{held}:{flow.webhook_id}",
                                 "ReplayUntil": datetime.now(UTC) - timedelta(seconds=1)})
    assert [outcome for _, outcome in await dead_letter_service.replay_all(CLINIC)] == ["replayed"]


async def test_a_new_dead_letter_is_free_of_an_earlier_replays_claim(env, receiver) -> None:
    flow = await add_flow(receiver.url("again"))
    (event,) = await dead_letters_of(flow, 1)
    store = DeadLetters(table())
    await store.claim(await store.get(CLINIC, event, flow.webhook_id), datetime.now(UTC))
    await store.record(CLINIC, event, flow.webhook_id, trigger="AppointmentCreated", change_type="Created",
                       appointment_id="appt-0", reason="rejected", status=400, error_code="Rejected", error_text="",
                       attempts=1, first_attempt_at=datetime.now(UTC), correlation_id="c")
    assert (await store.get(CLINIC, event, flow.webhook_id)).replay_until is None


def list_request(token: str, query: str = "") -> func.HttpRequest:
    route = f"v1/bookingBusinesses/{CLINIC}/deadletters"
    params = {key: values[0] for key, values in parse_qs(query).items()}
    return func.HttpRequest("GET", f"http://127.0.0.1/api/{route}?{query}", headers={"authorization":
                            f"Bearer {token}"}, params=params, route_params={"smtp": CLINIC}, body=b"")


async def test_the_dead_letter_list_is_paged(sandboxed, sandbox, receiver) -> None:
    flow = await add_flow(receiver.url("paged"))
    events_ = await dead_letters_of(flow, 7)
    token = sandbox.user_token("admin@contoso.test")
    pages, query = [], "top=3"
    while True:
        answer = await deadletter_api.list_dead_letters(list_request(token, query))
        assert answer.status_code == 200, answer.get_body()
        body = json.loads(answer.get_body())
        pages.append([d["eventId"] for d in body["deadLetters"]])
        if "nextLink" not in body:
            break
        link = urlsplit(body["nextLink"])
        assert link.path == f"/api/v1/bookingBusinesses/{CLINIC}/deadletters"
        query = link.query
    assert [len(page) for page in pages] == [3, 3, 1]
    assert sorted(e for page in pages for e in page) == sorted(events_)  # each once
    default = json.loads((await deadletter_api.list_dead_letters(list_request(token))).get_body())
    assert len(default["deadLetters"]) == 7 and "nextLink" not in default
    assert default["deadLetters"][0]["id"] == public_id(sorted(events_)[0], flow.webhook_id)
    for bad in ("top=0", f"top={deadletter_api.MAX_PAGE_SIZE + 1}", "top=%C2%B2", "top=x", "after=nope"):
        refused = await deadletter_api.list_dead_letters(list_request(token, bad))
        assert refused.status_code == 400, bad
        assert json.loads(refused.get_body())["error"]["code"] == "InvalidRequest"


async def test_a_page_of_a_long_list_stays_small(sandboxed, sandbox, receiver) -> None:
    flow = await add_flow(receiver.url("long"))
    await dead_letters_of(flow, deadletter_api.MAX_PAGE_SIZE + 20)
    answer = await deadletter_api.list_dead_letters(list_request(sandbox.user_token("admin@contoso.test"),
                                                                 f"top={deadletter_api.MAX_PAGE_SIZE}"))
    body = json.loads(answer.get_body())
    assert len(body["deadLetters"]) == deadletter_api.MAX_PAGE_SIZE and body["nextLink"]
    assert len(answer.get_body()) < 80_000


async def test_a_test_event_by_someone_else_than_the_creator_or_an_administrator_is_403(sandboxed, sandbox,
                                                                                       receiver) -> None:
    flow = await add_flow(receiver.url("tested"))
    answer = await test_event_api.handle(event_request(flow.webhook_id, sandbox.user_token("viewer@contoso.test")))
    error = json.loads(answer.get_body())["error"]
    assert (answer.status_code, error["code"]) == (403, "NotFlowCreatorOrAdministrator")
    assert await queued() == []
