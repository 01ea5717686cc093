"""Controls the benchmarks need: many users at once, cloned businesses, subscriptions seeded in bulk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from graph_sandbox import SandboxServer
from graph_sandbox.testing import NotificationReceiver

PREFER = {"Prefer": "include-unknown-enum-members"}


def test_users_can_be_added_in_bulk(sb: SandboxServer) -> None:
    r = sb.http.post("/_sandbox/users", json={"value": [{"upn": f"m{i}@contoso.test"} for i in range(3)]})
    assert r.status_code == 201
    assert [u["upn"] for u in r.json()["value"]] == ["m0@contoso.test", "m1@contoso.test", "m2@contoso.test"]
    assert sb.http.post("/_sandbox/users", json={"value": [{"upn": "no-at-sign"}]}).status_code == 400
    assert sb.http.post("/_sandbox/users", json={"upn": "single@contoso.test"}).status_code == 201


def test_cloned_business_has_the_same_staff_and_services_under_new_ids(sb: SandboxServer, graph: httpx.Client
                                                                         ) -> None:
    r = sb.http.post("/_sandbox/businesses", json={"smtp": "Clinic2@contoso.test", "displayName": "Clinic 2"})
    assert r.status_code == 201, r.text
    assert r.json() == {"id": "clinic2@contoso.test", "displayName": "Clinic 2", "staff": 4, "services": 2}
    base = "/solutions/bookingBusinesses"
    clone = graph.get(f"{base}/clinic2@contoso.test").json()
    assert clone["displayName"] == "Clinic 2" and clone["publicUrl"] == "https://book.ms/b/clinic2@contoso.test"

    def staff(smtp: str) -> dict[str, tuple[str, str]]:
        return {s["emailAddress"]: (s["role"], s["id"])
                for s in graph.get(f"{base}/{smtp}/staffMembers", headers=PREFER).json()["value"]}

    original, cloned = staff("clinic@contoso.test"), staff("clinic2@contoso.test")
    assert {k: v[0] for k, v in cloned.items()} == {k: v[0] for k, v in original.items()}
    assert not {v[1] for v in cloned.values()} & {v[1] for v in original.values()}
    services = graph.get(f"{base}/clinic2@contoso.test/services").json()["value"]
    questions = {q["id"] for q in graph.get(f"{base}/clinic2@contoso.test/customQuestions").json()["value"]}
    for service in services:  # references point into the clone, not the original
        assert set(service["staffMemberIds"]) <= {v[1] for v in cloned.values()}
        assert {q["questionId"] for q in service["customQuestions"]} <= questions
    assert graph.get(f"{base}/clinic2@contoso.test/appointments").json()["value"] == []
    assert "clinic2@contoso.test" in {u["upn"] for u in sb.control("GET", "users")["value"]}

    # An appointment booked in the clone works like in the original.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    one_to_one = next(s for s in services if s["maximumAttendeesCount"] == 1)
    booked = graph.post(f"{base}/clinic2@contoso.test/appointments", json={
        "serviceId": one_to_one["id"], "customers": [{"name": "Kim", "emailAddress": "kim@example.test"}],
        "startDateTime": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
        "endDateTime": {"dateTime": (start + timedelta(minutes=30)).replace(tzinfo=None).isoformat(),
                        "timeZone": "UTC"}})
    assert booked.status_code == 201, booked.text

    assert sb.http.post("/_sandbox/businesses", json={"smtp": "clinic2@contoso.test"}).status_code == 409
    assert sb.http.post("/_sandbox/businesses", json={"smtp": "x@contoso.test", "copyOf": "no@x"}).status_code == 404
    assert sb.http.post("/_sandbox/businesses", json={"smtp": "no-at"}).status_code == 400


def test_seeded_subscriptions_skip_the_handshake_and_behave_like_created_ones(
    sb: SandboxServer, graph: httpx.Client, receiver: NotificationReceiver
) -> None:
    sb.http.post("/_sandbox/users", json={"value": [{"upn": "m1@contoso.test"}]})
    url = f"{receiver.url}/api/graph/notifications"
    r = sb.http.post("/_sandbox/subscriptions", json={"value": [
        {"mailbox": "M1@contoso.test", "notificationUrl": url, "clientState": "cs-1"},
        {"mailbox": "clinic@contoso.test", "notificationUrl": url, "clientState": "cs-2"}]})
    assert r.status_code == 201, r.text
    seeded = r.json()["value"]
    assert [s["mailbox"] for s in seeded] == ["m1@contoso.test", "clinic@contoso.test"]
    assert sb.notifications(kind="validation") == []  # no handshake
    assert {s["id"] for s in graph.get("/subscriptions").json()["value"]} == {s["id"] for s in seeded}

    # The app renews them through Graph's own API, under the write limit like any other.
    renewed = graph.patch(f"/subscriptions/{seeded[0]['id']}", json={
        "expirationDateTime": (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert renewed.status_code == 200, renewed.text

    # They notify like created ones.
    sb.http.post("/_sandbox/mailboxes/clinic@contoso.test/events", json={"subject": "Seeded"})
    sb.wait_for(lambda: any(i.get("clientState") == "cs-2" for i in receiver.items()))

    before = len(graph.get("/subscriptions").json()["value"])
    bad = sb.http.post("/_sandbox/subscriptions", json={"value": [
        {"mailbox": "m1@contoso.test", "notificationUrl": url}, {"mailbox": "nobody@contoso.test",
                                                                  "notificationUrl": url}]})
    assert bad.status_code == 404  # all or nothing
    assert len(graph.get("/subscriptions").json()["value"]) == before
    assert sb.http.post("/_sandbox/subscriptions", json={"value": [{"mailbox": "m1@contoso.test"}]}).status_code == 400
    assert sb.http.post("/_sandbox/subscriptions", json={"mailbox": "m1@contoso.test"}).status_code == 400
