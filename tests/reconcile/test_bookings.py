"""``shared.services.bookings``, the one door to a business in Graph, against the Graph sandbox: its one cache of
services, staff and questions (as the reconcile and as the actions take it) and its catalogue errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from shared.services import bookings
from shared.services.bookings import ACTION_LOOKUP_SECONDS, Bookings
from shared.services.graph_failures import GraphFailure

CLINIC = "clinic@contoso.test"


def lookup_reads(sandbox: Any) -> int:
    return len([r for r in sandbox.requests() if r["path"].endswith(("/services", "/staffMembers",
                                                                     "/customQuestions"))])


@pytest.fixture
async def door(graph_env, sandbox) -> AsyncIterator[Bookings]:
    bookings.forget_cached()
    yield Bookings(CLINIC)
    bookings.forget_cached()


async def test_the_actions_take_lookups_a_minute_old_the_reconcile_longer(door: Bookings, sandbox) -> None:
    found = await door.lookups()
    assert found["services"] and found["staff"] and door.calls == 3 and lookup_reads(sandbox) == 3
    assert await Bookings(CLINIC).lookups() == found and lookup_reads(sandbox) == 3  # one cache for the process
    cached = bookings._lookups[CLINIC]
    bookings._lookups[CLINIC] = replace(cached, read_at=cached.read_at - ACTION_LOOKUP_SECONDS - 1)
    reconcile = Bookings(CLINIC)
    assert await reconcile.lookups_for({"serviceId": found["services"][0]["id"]}) == found
    assert reconcile.calls == 0 and lookup_reads(sandbox) == 3  # within the reconcile's 10 minutes
    action = Bookings(CLINIC)
    await action.lookups()
    assert action.calls == 3 and lookup_reads(sandbox) == 6  # over the actions' minute


async def test_an_id_the_lookups_lack_is_read_for_once_then_remembered(door: Bookings, sandbox) -> None:
    naming_gone = {"staffMemberIds": ["no-such-staff-member"]}
    await door.lookups_for(naming_gone)  # nothing cached: read
    assert door.calls == 3
    bookings._lookups[CLINIC].missing.clear()  # as if another reader's read had replaced the entry
    await door.lookups_for(naming_gone)  # read by this reconcile already: not again
    assert door.calls == 3
    later = Bookings(CLINIC)
    await later.lookups_for(naming_gone)  # found missing after a read: not read for again
    assert later.calls == 0 and lookup_reads(sandbox) == 3
    assert "no-such-staff-member" in bookings._lookups[CLINIC].missing


async def test_graph_failures_are_catalogue_errors_that_keep_graphs_status(door: Bookings, sandbox) -> None:
    assert await door.appointment("no-such-appointment") is None  # 404
    sandbox.add_fault(method="GET", path="*/appointments/refused", status=403, code="ErrorAccessDenied")
    with pytest.raises(GraphFailure) as refused:
        await door.appointment("refused")
    assert (refused.value.code, refused.value.status, refused.value.graph_status) == ("GraphPermissionMissing",
                                                                                      502, 403)
    assert refused.value.details["graph_code"] == "ErrorAccessDenied" and not refused.value.unreachable_or_throttled
    sandbox.add_fault(method="GET", path="*/appointments/busy", status=429, retryAfter=1, count=None)
    with pytest.raises(GraphFailure) as busy:
        await door.appointment("busy")  # the adapter's retries honour Retry-After first, then give up
    assert (busy.value.code, busy.value.graph_status, busy.value.retry_after) == ("DependencyUnavailable", 429, 1)
    assert busy.value.throttled and busy.value.unreachable_or_throttled and busy.value.headers == {"Retry-After": "1"}
