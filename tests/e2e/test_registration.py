"""Registration through the local host, Graph and Entra played by the sandbox: the connector's view."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import sandbox_subscriptions

CLINIC = "clinic@contoso.test"
CALLBACK = "http://127.0.0.1:9/flows/x?sig=very-secret-signature"


def register(host, sandbox, upn: str, trigger: str = "AppointmentCreated", callback: str = CALLBACK,
             **headers: str) -> httpx.Response:
    token = sandbox.user_token(upn)
    return httpx.post(f"{host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks/{trigger}", timeout=60,
                      headers={"Authorization": f"Bearer {token}", **headers},
                      json={"notificationURL": callback, "resource": "Appointments",
                            "changeType": trigger.removeprefix("Appointment")})


def test_first_flow_subscribes_and_last_flow_unsubscribes(app_host, sandbox) -> None:
    first = register(app_host, sandbox, "admin@contoso.test")
    assert first.status_code == 201, first.text
    assert first.headers["location"] == (f"{app_host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks/"
                                         f"{first.json()['webhookId']}")
    assert len(sandbox_subscriptions(sandbox)) == 1
    second = register(app_host, sandbox, "admin@contoso.test", "AppointmentDeleted")
    assert second.status_code == 201
    assert len(sandbox_subscriptions(sandbox)) == 1  # still one per mailbox

    token = sandbox.user_token("admin@contoso.test")
    listing = httpx.get(f"{app_host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks",
                        headers={"Authorization": f"Bearer {token}"}).json()
    assert {w["trigger"] for w in listing["webhooks"]} == {"AppointmentCreated", "AppointmentDeleted"}
    assert "sig=" not in str(listing)

    for response in (first, second):
        deleted = httpx.delete(response.headers["location"], headers={"Authorization": f"Bearer {token}"})
        assert deleted.status_code == 204
    assert sandbox_subscriptions(sandbox) == []
    again = httpx.delete(first.headers["location"], headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 204  # Power Automate retries deletes
    assert "very-secret-signature" not in app_host.log


@pytest.mark.parametrize(("upn", "status", "code"), [
    ("viewer@contoso.test", 403, "NotBookingsAdministrator"),
    ("scheduler@contoso.test", 403, "NotBookingsAdministrator"),
    ("member@contoso.test", 403, "NotBookingsAdministrator"),
    ("outsider@contoso.test", 403, "NotBookingsAdministrator"),
])
def test_non_administrators_are_refused_in_their_language(app_host, sandbox, upn, status, code) -> None:
    response = register(app_host, sandbox, upn, **{"Accept-Language": "ja"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["correlationId"]
    assert any("\u3040" <= ch <= "\u30ff" for ch in error["message"] + error["remedy"])  # Japanese text
    assert sandbox_subscriptions(sandbox) == []


def test_graph_refusing_the_subscription_leaves_no_flow(app_host, sandbox) -> None:
    sandbox.add_fault(method="POST", path="/v1.0/subscriptions", status=429, retryAfter=20, count=1)
    response = register(app_host, sandbox, "admin@contoso.test")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "GraphThrottled"
    assert response.headers["retry-after"] == "20"
    token = sandbox.user_token("admin@contoso.test")
    listing = httpx.get(f"{app_host.url}/api/v1/bookingBusinesses/{CLINIC}/webhooks",
                        headers={"Authorization": f"Bearer {token}"}).json()
    assert listing["webhooks"] == []


def test_an_administrator_whose_upn_is_not_their_mailbox_uses_the_dropdown_and_registers(app_host, sandbox) -> None:
    """The real-tenant case: the UPN is on contoso.onmicrosoft.com, the staff list holds the mail address.
    The dropdown lists businesses on the user's behalf (the sandbox refuses app-only listing by default)."""
    upn = "ada.k@contoso.onmicrosoft.com"
    sandbox.control("POST", "/users", {"upn": upn, "mail": "ada@contoso.test",
                                       "proxyAddresses": ["SMTP:ada@contoso.test"]})

    def add_staff(sb) -> None:
        sb.state.business(CLINIC).staff["staff-ada"] = {"id": "staff-ada", "displayName": "Ada",
                                                        "emailAddress": "ada@contoso.test", "role": "administrator"}
    sandbox._thread.call(add_staff, sandbox.sandbox)
    token = sandbox.user_token(upn)
    dropdown = httpx.get(f"{app_host.url}/api/v1/bookingBusinessesUserAsAdmin", timeout=60,
                         headers={"Authorization": f"Bearer {token}"})
    assert dropdown.status_code == 200, dropdown.text
    assert dropdown.json() == {"mailboxes": [{"displayName": "Contoso Clinic", "email": CLINIC}]}
    assert register(app_host, sandbox, upn).status_code == 201
    assert "Bearer ey" not in app_host.log and token not in app_host.log
