"""Subscriptions: the real validation handshake, Graph's limits, notifications, retries, lifecycle."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from graph_sandbox import SandboxConfig, SandboxServer
from graph_sandbox.testing import NotificationReceiver

from .conftest import OTHER_APP

CLINIC = "clinic@contoso.test"
B = f"/solutions/bookingBusinesses/{CLINIC}"


def _expiry(minutes: float = 60) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sub_body(receiver: NotificationReceiver, **extra: Any) -> dict[str, Any]:
    return {
        "changeType": "created,updated,deleted",
        "notificationUrl": f"{receiver.url}/api/graph/notifications?code=abc",
        "lifecycleNotificationUrl": f"{receiver.url}/api/graph/lifecycle",
        "resource": f"/users/{CLINIC}/events",
        "expirationDateTime": _expiry(),
        "clientState": "s3cr3t-state",
        **extra,
    }


def _subscribe(graph: httpx.Client, receiver: NotificationReceiver, **extra: Any) -> dict[str, Any]:
    r = graph.post("/subscriptions", json=_sub_body(receiver, **extra))
    assert r.status_code == 201, r.text
    return r.json()


def _book(graph: httpx.Client, days: int = 5) -> dict[str, Any]:
    service = next(s for s in graph.get(f"{B}/services").json()["value"] if s["maximumAttendeesCount"] == 1)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    body = {
        "serviceId": service["id"],
        "startDateTime": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "endDateTime": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "customers": [{"name": "Pat", "emailAddress": "pat@example.test"}],
    }
    r = graph.post(f"{B}/appointments", json=body)
    assert r.status_code == 201
    return r.json()


# ---- handshake ---------------------------------------------------------------------------------


def test_creation_validates_both_urls_with_a_url_encoded_token(
    graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    sub = _subscribe(graph, receiver)
    assert len(receiver.validations) == 2
    # Graph's token has spaces and colons: the receiver only echoes it right if it URL-decodes it.
    assert all(" " in t and ":" in t for t in receiver.validations)
    assert sub["@odata.context"].endswith("$metadata#subscriptions/$entity")
    assert sub["changeType"] == "created,updated,deleted" and sub["clientState"] == "s3cr3t-state"
    assert sub["applicationId"] == "a99b0000-0000-4000-8000-000000000002"
    assert sub["lifecycleNotificationUrl"].endswith("/api/graph/lifecycle")
    assert sub["latestSupportedTlsVersion"] == "v1_2" and sub["includeResourceData"] is False


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("wrong", "Response must exactly match validationToken"),
        ("json", "content type"),
        ("status:500", "must respond with 200 OK"),
        ("status:202", "must respond with 200 OK"),
        ("delay:1.0", "timed out"),  # the test server's timeout is 0.5 s (Graph: 10 s)
    ],
)
def test_failed_handshake_creates_nothing(
    graph: httpx.Client, receiver: NotificationReceiver, mode: str, message: str
) -> None:
    receiver.validation = mode
    r = graph.post("/subscriptions", json=_sub_body(receiver))
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "ValidationError" and message in err["message"]
    assert err["message"].startswith("Subscription validation request")
    assert graph.get("/subscriptions").json()["value"] == []


def test_unreachable_endpoint_fails_validation(graph: httpx.Client, receiver: NotificationReceiver) -> None:
    body = _sub_body(receiver, notificationUrl="http://127.0.0.1:9/nothing-listens-here")
    r = graph.post("/subscriptions", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "ValidationError"


def test_lifecycle_url_is_validated_too(sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver) -> None:
    with NotificationReceiver(validation="wrong") as bad:
        r = graph.post("/subscriptions", json=_sub_body(receiver, lifecycleNotificationUrl=f"{bad.url}/lifecycle"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "ValidationError"
    assert [e["purpose"] for e in sb.notifications(kind="validation")] == [
        "notificationUrl",
        "lifecycleNotificationUrl",
    ]


@pytest.mark.slow
def test_handshake_times_out_after_graphs_ten_seconds() -> None:
    with SandboxServer(SandboxConfig(seed=True)) as server, NotificationReceiver(validation="delay:10.5") as slow:
        started = time.monotonic()
        r = httpx.post(
            f"{server.graph_url}/subscriptions",
            json=_sub_body(slow),
            headers=server.graph_headers(),
            timeout=30,
            trust_env=False,
        )
        elapsed = time.monotonic() - started
    assert r.status_code == 400 and "timed out" in r.json()["error"]["message"]
    assert 9.9 <= elapsed < 10.5


# ---- documented limits on create/update ---------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "status", "fragment"),
    [
        ({"expirationDateTime": "x"}, 400, "Edm.DateTimeOffset"),
        ({"clientState": "x" * 129}, 400, "128"),
        ({"changeType": "created,moved"}, 400, "moved"),
        ({"resource": "/users/nobody@contoso.test/events"}, 404, "nobody"),
        ({"resource": "/users/clinic@contoso.test/messages"}, 400, "messages"),
        ({"notificationUrl": "ftp://example.test/x"}, 400, "HTTPS"),
    ],
)
def test_create_rejects_bad_bodies(
    graph: httpx.Client, receiver: NotificationReceiver, extra: dict, status: int, fragment: str
) -> None:
    r = graph.post("/subscriptions", json=_sub_body(receiver, **extra))
    assert r.status_code == status
    assert fragment in r.json()["error"]["message"]
    assert receiver.validations == []  # checked before any handshake


def test_expiration_limit_is_4230_minutes(graph: httpx.Client, receiver: NotificationReceiver) -> None:
    r = graph.post("/subscriptions", json=_sub_body(receiver, expirationDateTime=_expiry(4231)))
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Subscription expiration can only be 4230 minutes in the future."
    assert graph.post("/subscriptions", json=_sub_body(receiver, expirationDateTime=_expiry(-1))).status_code == 400
    _subscribe(graph, receiver, expirationDateTime=_expiry(4229), clientState="x" * 128)


def test_resource_by_object_id_and_calendar_path(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    user_id = next(u["id"] for u in sb.control("GET", "users")["value"] if u["upn"] == CLINIC)
    _subscribe(graph, receiver, resource=f"users/{user_id}/calendar/events")
    _subscribe(graph, receiver, resource=f"/users('{CLINIC}')/events")


def test_missing_calendar_permission_is_403(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    sb.control("POST", "apps/a99b0000-0000-4000-8000-000000000002/roles", {"roles": ["Bookings.Read.All"]})
    try:
        headers = {"Authorization": f"Bearer {sb.app_token()}"}
        r = graph.post("/subscriptions", json=_sub_body(receiver), headers=headers)
    finally:
        sb.control(
            "POST",
            "apps/a99b0000-0000-4000-8000-000000000002/roles",
            {"roles": ["Bookings.Read.All", "BookingsAppointment.ReadWrite.All", "Calendars.Read"]},
        )
    assert r.status_code == 403


def test_get_list_renew_reauthorize_delete(graph: httpx.Client, receiver: NotificationReceiver) -> None:
    sub = _subscribe(graph, receiver)
    url = f"/subscriptions/{sub['id']}"
    assert graph.get(url).json()["id"] == sub["id"]
    assert [s["id"] for s in graph.get("/subscriptions").json()["value"]] == [sub["id"]]
    new_expiry = _expiry(4000)
    renewed = graph.patch(url, json={"expirationDateTime": new_expiry})
    assert renewed.status_code == 200
    assert renewed.json()["expirationDateTime"][:19] == new_expiry[:19]
    assert graph.patch(url, json={"expirationDateTime": _expiry(5000)}).status_code == 400
    assert graph.patch(url, json={"lifecycleNotificationUrl": f"{receiver.url}/x"}).status_code == 400
    assert graph.post(f"{url}/reauthorize").status_code == 204
    assert graph.delete(url).status_code == 204
    assert graph.get(url).status_code == 404
    assert graph.delete(url).status_code == 404


def test_apps_only_see_their_own_subscriptions(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    sub = _subscribe(graph, receiver)
    other = {"Authorization": f"Bearer {sb.app_token(OTHER_APP.client_id, OTHER_APP.client_secret)}"}
    assert graph.get("/subscriptions", headers=other).json()["value"] == []
    assert graph.get(f"/subscriptions/{sub['id']}", headers=other).status_code == 404


# ---- change notifications ------------------------------------------------------------------------


def test_appointment_changes_notify_with_graphs_payload(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    sub = _subscribe(graph, receiver)
    user_id = next(u["id"] for u in sb.control("GET", "users")["value"] if u["upn"] == CLINIC)
    appt = _book(graph)
    sb.wait_for(lambda: len(receiver.items()) >= 2)
    created, updated = receiver.items()[:2]
    assert created["changeType"] == "created" and updated["changeType"] == "updated"  # Outlook's usual pair
    event_id = created["resourceData"]["id"]
    assert event_id != appt["id"]
    assert created["resource"] == f"Users/{user_id}/Events/{event_id}"
    assert created["resourceData"]["@odata.type"] == "#Microsoft.Graph.Event"
    assert created["resourceData"]["@odata.id"] == created["resource"]
    assert created["subscriptionId"] == sub["id"] and created["clientState"] == "s3cr3t-state"
    assert created["tenantId"] == sb.tenant_id
    assert created["subscriptionExpirationDateTime"] == sub["expirationDateTime"]
    # The resource names the mailbox by object id; the event can be read with it.
    assert graph.get(f"/{created['resource']}").status_code == 200

    before = len(receiver.items())
    graph.post(f"{B}/appointments/{quote(appt['id'])}/cancel", json={"cancellationMessage": "sorry"})
    sb.wait_for(lambda: len(receiver.items()) > before)
    deleted = receiver.items()[-1]
    assert deleted["changeType"] == "deleted" and deleted["resourceData"]["id"] == event_id
    assert graph.get(f"/{deleted['resource']}").status_code == 404


def test_change_types_filter_notifications(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    _subscribe(graph, receiver, changeType="deleted")
    appt = _book(graph)
    graph.delete(f"{B}/appointments/{quote(appt['id'])}")
    sb.wait_for(lambda: receiver.items())
    time.sleep(0.3)
    assert [i["changeType"] for i in receiver.items()] == ["deleted"]


def test_a_burst_is_batched_into_few_posts(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    _subscribe(graph, receiver)
    for day in range(5):
        _book(graph, days=10 + day)
    sb.wait_for(lambda: len(receiver.items()) >= 10)
    assert len(receiver.received) < 10
    assert max(len(body["value"]) for body in receiver.received) > 1


def test_other_mailboxes_do_not_notify(sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver) -> None:
    _subscribe(graph, receiver, resource="/users/salon@contoso.test/events")
    _book(graph)
    time.sleep(0.4)
    assert receiver.items() == []


def test_plain_calendar_events_notify_too(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    _subscribe(graph, receiver)
    event = sb.control("POST", f"mailboxes/{CLINIC}/events", {"subject": "Staff meeting"})
    sb.wait_for(lambda: receiver.items())
    assert receiver.items()[0]["resourceData"]["id"] == event["id"]


def test_failed_delivery_is_retried_and_every_attempt_logged(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    _subscribe(graph, receiver, changeType="deleted")
    appt = _book(graph)
    receiver.plan = [(500, 0.0), (503, 0.0)]
    graph.delete(f"{B}/appointments/{quote(appt['id'])}")
    attempts = sb.wait_for(
        lambda: (
            [e for e in sb.notifications(kind="change") if e["outcome"] == "delivered"]
            and sb.notifications(kind="change")
        )
    )
    assert [(e["attempt"], e["status"], e["outcome"]) for e in attempts] == [
        (1, 500, "failed"),
        (2, 503, "failed"),
        (3, 202, "delivered"),
    ]
    assert len({e["batchId"] for e in attempts}) == 1
    assert len(receiver.received) == 3  # same batch, three POSTs


def test_slow_endpoint_counts_as_failure_and_is_retried(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    _subscribe(graph, receiver, changeType="deleted")
    appt = _book(graph)
    receiver.plan = [(202, 0.6)]  # slower than the test server's 0.3 s (Graph: 3 s)
    graph.delete(f"{B}/appointments/{quote(appt['id'])}")
    sb.wait_for(lambda: any(e["outcome"] == "delivered" for e in sb.notifications(kind="change")))
    outcomes = [e["outcome"] for e in sb.notifications(kind="change")]
    assert outcomes == ["timeout", "delivered"]


def test_retries_give_up_and_record_it(sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver) -> None:
    _subscribe(graph, receiver, changeType="deleted")
    appt = _book(graph)
    receiver.default = (500, 0.0)
    graph.delete(f"{B}/appointments/{quote(appt['id'])}")
    sb.wait_for(lambda: any(e["outcome"] == "discarded" for e in sb.notifications(kind="change")), timeout=5)
    assert [e["outcome"] for e in sb.notifications(kind="change")] == ["failed"] * 4 + ["discarded"]


def test_dropped_notifications_fault(sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver) -> None:
    _subscribe(graph, receiver, changeType="created")
    sb.add_fault(kind="dropNotifications", mailbox=CLINIC, count=1)
    _book(graph, days=20)
    _book(graph, days=21)
    sb.wait_for(lambda: receiver.items())
    time.sleep(0.3)
    assert len(receiver.items()) == 1
    assert [e["outcome"] for e in sb.notifications(kind="change")] == ["dropped", "delivered"]


def test_dropped_notification_can_be_announced_as_missed(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    sub = _subscribe(graph, receiver, changeType="created")
    sb.add_fault(kind="dropNotifications", mailbox="clinic@*", count=1, sendMissed=True)
    _book(graph, days=22)
    item = sb.wait_for(lambda: [i for i in receiver.items() if "lifecycleEvent" in i])[0]
    assert item["lifecycleEvent"] == "missed" and item["subscriptionId"] == sub["id"]
    assert [i for i in receiver.items() if "changeType" in i] == []


def test_delayed_notifications_arrive_out_of_order(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    _subscribe(graph, receiver, changeType="created")
    sb.add_fault(kind="delayNotifications", count=1, latencyMs=1000)
    first = _book(graph, days=23)
    time.sleep(0.15)  # past the batch window: two batches
    second = _book(graph, days=24)
    sb.wait_for(lambda: len(receiver.items()) >= 2, timeout=5)
    # Notifications name calendar events: their start tells which booking each one is about.
    starts = [graph.get(f"/users/{CLINIC}/events/{i['resourceData']['id']}").json()["start"]["dateTime"][:10]
              for i in receiver.items()]
    assert starts == [second["startDateTime"]["dateTime"][:10], first["startDateTime"]["dateTime"][:10]]


# ---- lifecycle -----------------------------------------------------------------------------------


def _lifecycle_items(receiver: NotificationReceiver) -> list[dict[str, Any]]:
    return [i for i in receiver.items() if "lifecycleEvent" in i]


@pytest.mark.parametrize("event", ["reauthorizationRequired", "missed", "subscriptionRemoved"])
def test_lifecycle_events_on_demand(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver, event: str
) -> None:
    sub = _subscribe(graph, receiver)
    answer = sb.control("POST", f"subscriptions/{sub['id']}/lifecycle", {"event": event})
    assert answer["sent"] is True
    item = sb.wait_for(lambda: _lifecycle_items(receiver))[0]
    assert item == {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": sub["expirationDateTime"],
        "tenantId": sb.tenant_id,
        "clientState": "s3cr3t-state",
        "lifecycleEvent": event,
    }
    assert (graph.get(f"/subscriptions/{sub['id']}").status_code == 404) == (event == "subscriptionRemoved")


def test_no_lifecycle_url_means_no_lifecycle_notification(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    body = _sub_body(receiver)
    del body["lifecycleNotificationUrl"]
    sub = graph.post("/subscriptions", json=body).json()
    assert sb.control("POST", f"subscriptions/{sub['id']}/lifecycle", {"event": "missed"})["sent"] is False


def test_unanswered_reauthorization_pauses_notifications(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    sub = _subscribe(graph, receiver, changeType="created")
    sb.control("POST", f"subscriptions/{sub['id']}/lifecycle", {"event": "reauthorizationRequired", "graceSeconds": 0})
    _book(graph, days=30)
    time.sleep(0.3)
    assert [i for i in receiver.items() if "changeType" in i] == []
    assert [e["outcome"] for e in sb.notifications(kind="change")] == ["paused"]
    assert graph.post(f"/subscriptions/{sub['id']}/reauthorize").status_code == 204
    _book(graph, days=31)
    sb.wait_for(lambda: [i for i in receiver.items() if "changeType" in i])


def test_expiry_removes_the_subscription_and_says_so(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    sub = _subscribe(graph, receiver)
    sb.control("POST", f"subscriptions/{sub['id']}/expire")
    item = sb.wait_for(lambda: _lifecycle_items(receiver))[0]
    assert item["lifecycleEvent"] == "subscriptionRemoved" and item["subscriptionId"] == sub["id"]
    assert graph.get(f"/subscriptions/{sub['id']}").status_code == 404
    _book(graph)
    time.sleep(0.3)
    assert [i for i in receiver.items() if "changeType" in i] == []


def test_natural_expiry(sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver) -> None:
    sub = _subscribe(graph, receiver, expirationDateTime=_expiry(1.5 / 60))
    assert graph.get(f"/subscriptions/{sub['id']}").status_code == 200
    item = sb.wait_for(lambda: _lifecycle_items(receiver), timeout=5)[0]
    assert item["lifecycleEvent"] == "subscriptionRemoved"
    assert graph.get(f"/subscriptions/{sub['id']}").status_code == 404


def test_slow_endpoint_is_throttled_then_dropped() -> None:
    """Webhooks docs: >2.9 s is slow; after 100 answers 10 % slow delays by 10 min, 15 % drops (scaled down)."""
    config = SandboxConfig(
        slow_response_s=0.5,  # margins a loaded machine (parallel tests) keeps
        slow_min_samples=10,
        throttled_delay_s=0.4,
        notification_timeout_s=3.0,
        batch_window_s=0.01,
        updated_after_created=False,
    )
    with SandboxServer(config) as server, NotificationReceiver() as rec:
        graph = httpx.Client(base_url=server.graph_url, headers=server.graph_headers(), trust_env=False)
        _subscribe(graph, rec, changeType="created")

        def notify_and_settle() -> dict[str, Any]:
            before = len(server.notifications(kind="change"))
            server.control("POST", f"mailboxes/{CLINIC}/events", {"subject": "ping"})
            return server.wait_for(
                lambda: (
                    server.notifications(kind="change")[before:]
                    if server.control("GET", "notifications")["pending"] == 0
                    else None
                )
            )[-1]

        rec.plan = [(202, 0.0)] * 9 + [(202, 0.8)]
        for _ in range(10):
            assert notify_and_settle()["outcome"] == "delivered"
        health = server.control("GET", "endpoints")[rec.url + "/api/graph/notifications?code=abc"]
        assert health == {"responses": 10, "slow": 1, "slowPercent": 10.0, "state": "throttled"}

        started = time.monotonic()
        entry = notify_and_settle()
        assert entry["outcome"] == "delivered" and entry["throttled"] is True
        assert time.monotonic() - started >= 0.4  # delayed while throttled; 1 slow of 11 is under 10 % again

        rec.plan = [(202, 0.8)]
        assert notify_and_settle()["outcome"] == "delivered"  # 2 slow of 12 = 16.7 %
        dropped = notify_and_settle()
        assert dropped["outcome"] == "dropped" and "15 %" in dropped["error"]
        graph.close()


def test_duplicate_notifications_fault(sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver) -> None:
    _subscribe(graph, receiver, changeType="deleted")
    appt = _book(graph)
    sb.add_fault(kind="duplicateNotifications", count=1)
    graph.delete(f"{B}/appointments/{quote(appt['id'])}")
    sb.wait_for(lambda: len(receiver.items()) >= 2)
    time.sleep(0.2)
    first, second = receiver.items()
    assert first == second and len(receiver.received) == 2


def test_reauthorization_notice_before_expiry() -> None:
    config = SandboxConfig(reauthorization_notice_s=60, expiry_sweep_interval_s=0.05)
    with SandboxServer(config) as server, NotificationReceiver() as rec:
        graph = httpx.Client(base_url=server.graph_url, headers=server.graph_headers(), trust_env=False)
        far = _subscribe(graph, rec)
        near = _subscribe(graph, rec, expirationDateTime=_expiry(0.5))
        item = server.wait_for(lambda: [i for i in rec.items() if "lifecycleEvent" in i])[0]
        time.sleep(0.2)
        notices = [i for i in rec.items() if "lifecycleEvent" in i]
        assert item["lifecycleEvent"] == "reauthorizationRequired" and item["subscriptionId"] == near["id"]
        assert len(notices) == 1  # once per expiry, and not for the far one
        assert far["id"] not in {i["subscriptionId"] for i in notices}
        graph.close()
