"""The callers' share of a mailbox's Graph limits (shared.records.graph_budget, shared.services.caller_budget), on
Azurite and the Graph sandbox: a burst, then the sustained rate, shared by every instance (two table clients stand in
for two instances: the allowance is a row, not process state); beyond it 429 ``GraphBudgetSpent`` with
``Retry-After``, in English and Japanese, before Graph is asked; the reconcile does not spend it."""

from __future__ import annotations

import asyncio
import json
import time

import azure.functions as func
import pytest

from shared.contracts.errors import ApiError, error_body
from shared.endpoints.appointments import APPOINTMENT_ROUTE, get_appointment
from shared.records import graph_budget
from shared.services import bookings, bookings_directory, caller_budget
from shared.services.bookings import Bookings
from testing.instances import in_another_instance

CLINIC = "clinic@contoso.test"
BASE = "http://127.0.0.1:7071/api/"


async def test_a_burst_then_the_rate_and_nothing_counted_when_refused(clean_env) -> None:
    mailbox = "burst@contoso.test"
    assert [await graph_budget.take(mailbox, 20) for _ in range(3)] == [0.0, 0.0, 0.0]  # a burst of 60
    wait = await graph_budget.take(mailbox)
    assert 0 < wait <= graph_budget.INTERVAL.total_seconds()
    assert await graph_budget.take(mailbox, 10) > wait  # asking for more waits longer; nothing was counted
    await asyncio.sleep(wait + 0.05)
    assert await graph_budget.take(mailbox) == 0.0
    assert await graph_budget.take("other@contoso.test", 60) == 0.0  # per mailbox


async def test_two_instances_share_one_allowance(clean_env) -> None:
    mailbox = "shared@contoso.test"

    async def burst() -> list[float]:
        return list(await asyncio.gather(*(graph_budget.take(mailbox, 2) for _ in range(30))))

    started = time.monotonic()
    mine, theirs = await asyncio.gather(burst(), in_another_instance(burst))
    elapsed = time.monotonic() - started
    allowed = sum(1 for w in mine + theirs if w == 0.0)
    refill = elapsed / graph_budget.INTERVAL.total_seconds()
    # At most a burst (plus what refilled meanwhile) in all, whichever instance asked (not one per instance); an
    # ETag race lost five times in a row is refused, never counted twice.
    assert 2 * allowed <= graph_budget.BURST + refill + 2, (allowed, elapsed)
    assert 2 * allowed >= graph_budget.BURST / 2, (mine, theirs)


async def test_beyond_the_share_an_action_is_429_before_graph_is_asked(clean_env, sandbox) -> None:
    bookings_directory.forget_cached()
    bookings.forget_cached()
    appointment_id = (await Bookings(CLINIC).calendar_view(*_far_range()))[0][0]["id"]
    token = sandbox.user_token("viewer@contoso.test")
    spent = await graph_budget.take(CLINIC, graph_budget.BURST)  # somebody spent the burst
    assert spent == 0.0
    sandbox.control("DELETE", "requests")
    route = APPOINTMENT_ROUTE.replace("{smtp}", CLINIC).replace("{appointmentId}", appointment_id)
    for language, words in (("en", "share of Microsoft Graph"), ("ja", "割り当て")):
        response = await get_appointment(func.HttpRequest(
            "GET", BASE + route, headers={"authorization": f"Bearer {token}", "accept-language": language},
            params={}, route_params={"smtp": CLINIC, "appointmentId": appointment_id}, body=b""))
        assert response.status_code == 429, response.get_body()
        error = json.loads(response.get_body())["error"]
        assert error["code"] == "GraphBudgetSpent" and words in error["message"] and error["remedy"]
        # The staff check admits an action only with room for it after the check: the wait says when that is.
        room = (1 + caller_budget.ADMISSION_HEADROOM) * graph_budget.INTERVAL.total_seconds()
        assert room <= int(response.headers["Retry-After"]) <= room + 2
    assert not [r for r in sandbox.requests() if r["path"].startswith("/v1.0/solutions")]  # Graph was not asked
    # The reconcile's reads do not spend the callers' share, and are not refused with it.
    assert await Bookings(CLINIC).appointment(appointment_id) is not None


async def test_a_callers_reads_take_one_slot_of_the_mailbox_at_a_time(clean_env, sandbox) -> None:
    bookings.forget_cached()
    listing, _ = await Bookings(CLINIC).calendar_view(*_far_range())
    sandbox.add_fault(method="GET", path="/v1.0/solutions/bookingBusinesses/*/appointments/*", latencyMs=100,
                      count=None)
    sandbox.control("DELETE", "requests")
    caller = Bookings(CLINIC, for_caller=True)
    await caller.reserve(len(listing))
    started = time.monotonic()
    await asyncio.gather(*(caller.appointment(a["id"]) for a in listing))
    elapsed = time.monotonic() - started
    assert len(sandbox.requests(path="*/appointments/*")) == len(listing) >= 3
    # One after the other (each ~100 ms): the other 3 of Outlook's 4 stay the reconcile's.
    assert elapsed >= 0.1 * len(listing) * 0.9, elapsed
    assert caller_budget.CALLER_CONCURRENCY == 1 and caller_budget.RECONCILE_CONCURRENCY == 3


def _far_range():
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return now - timedelta(days=1), now + timedelta(days=30)


def test_the_error_is_catalogued_in_both_languages() -> None:
    error = ApiError("GraphBudgetSpent", business=CLINIC, seconds=3, perTenMinutes="2,000")
    assert error.status == 429
    english = error_body("GraphBudgetSpent", "c", None, **error.details)["error"]
    japanese = error_body("GraphBudgetSpent", "c", "ja", **error.details)["error"]
    assert "2,000" in english["message"] and "3 seconds" in english["remedy"]
    assert "2,000" in japanese["message"] and "3 秒" in japanese["remedy"]


@pytest.fixture(autouse=True)
def _fresh_slots() -> None:
    bookings.forget_cached()
