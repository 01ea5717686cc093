"""POST /api/v1/bookingBusinesses/{smtp}/appointments/{id}/cancel through the host, Graph = the sandbox."""

from __future__ import annotations

import httpx
import pytest
from azure.data.tables import TableClient

from shared.records.reconcile_state import CANCEL_REASON_PREFIX

CLINIC = "clinic@contoso.test"


def first_appointment(sandbox) -> str:
    url = f"{sandbox.graph_url}/solutions/bookingBusinesses/{CLINIC}/appointments"
    return httpx.get(url, headers=sandbox.graph_headers()).json()["value"][0]["id"]


def cancel(host, sandbox, appointment_id: str, upn: str | None = "admin@contoso.test",
           body: object = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {sandbox.user_token(upn)}"} if upn else {}
    return httpx.post(f"{host.url}/api/v1/bookingBusinesses/{CLINIC}/appointments/{appointment_id}/cancel",
                      headers=headers, json={"reason": "the room flooded"} if body is None else body)


def reason_rows(azurite) -> list[dict]:
    table = TableClient.from_connection_string(azurite.connection_string, "mailboxes")
    return [e for e in table.query_entities(f"PartitionKey eq '{CLINIC}'")
            if e["RowKey"].startswith(CANCEL_REASON_PREFIX)]


def test_an_administrator_cancels_with_a_reason(app_host, sandbox, azurite) -> None:
    appointment_id = first_appointment(sandbox)
    response = cancel(app_host, sandbox, appointment_id)
    assert response.status_code == 204, response.text
    assert [c.get("cancellationMessage") for c in sandbox.control("GET", "cancellations")["value"]] == \
        ["the room flooded"]
    assert [r["Reason"] for r in reason_rows(azurite)] == ["the room flooded"]


@pytest.mark.parametrize(("upn", "body", "status", "code"), [
    (None, None, 401, "Unauthenticated"),
    ("viewer@contoso.test", None, 403, "NotBookingsAdministrator"),
    ("admin@contoso.test", {}, 400, "InvalidRequest"),
    ("admin@contoso.test", {"reason": "x" * 3000}, 400, "InvalidRequest"),
])
def test_refusals_are_json_errors_and_cancel_nothing(app_host, sandbox, azurite, upn, body, status, code) -> None:
    response = cancel(app_host, sandbox, first_appointment(sandbox), upn, body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert sandbox.control("GET", "cancellations")["value"] == []
    assert reason_rows(azurite) == []


def test_unknown_appointment_is_404_and_leaves_no_reason_behind(app_host, sandbox, azurite) -> None:
    response = cancel(app_host, sandbox, "AAMkNoSuchAppointment=")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "AppointmentNotFound"
    assert reason_rows(azurite) == []
