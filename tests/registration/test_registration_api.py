"""The webhook API's handlers, called as the Functions runtime calls them (func.HttpRequest in, out).

Real: token validation (JWKS over HTTP), callback policy, Table storage (Azurite). Fake: the Bookings
directory only, so each rule can be set up exactly (demotions, crashes); test_registration_sandbox.py runs
the same rules with the Graph-backed directory against the Graph sandbox.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.adapters.auth import Caller
from shared.adapters.settings import reset_settings_cache
from shared.adapters.storage import MAILBOX_TABLE, get_store
from shared.contracts.errors import ApiError
from shared.endpoints import flow_webhooks as registration_api
from shared.records import flows as registrations
from shared.records.flows import OFFSET_RANGES, FlowRegistry
from shared.services import bookings_directory, subscriptions
from shared.services.bookings_directory import AdministeredBusiness
from tests.registration.conftest import TokenIssuer, new_rsa_key

BASE = "http://127.0.0.1:7071"
CALLBACK = "http://127.0.0.1:8999/receiver/flow-1?api-version=1&sig=TOP-SECRET-SIG"
ROLES = {"admin@contoso.test": "administrator", "viewer@contoso.test": "viewer",
         "scheduler@contoso.test": "scheduler", "member@contoso.test": "teamMember",
         "guest@contoso.test": "guest", "external@contoso.test": "externalGuest",
         "admin2@contoso.test": "administrator"}


class FakeDirectory:
    """Stands in for Graph's Bookings staff lists. Records every question asked."""

    def __init__(self, businesses: dict[str, tuple[str, dict[str, str]]]) -> None:
        self.businesses = businesses  # smtp -> (display name, {upn: role})
        self.calls: list[tuple[str, ...]] = []

    async def staff_role(self, business: str, caller: Caller) -> str | None:
        self.calls.append(("staff_role", business, caller.upn))
        if business not in self.businesses:
            raise ApiError("BookingBusinessNotFound", business=business)
        return self.businesses[business][1].get(caller.upn)

    async def businesses_administered_by(self, caller: Caller) -> list[AdministeredBusiness]:
        self.calls.append(("businesses_administered_by", caller.upn))
        return [{"displayName": name, "email": smtp} for smtp, (name, staff) in self.businesses.items()
                if staff.get(caller.upn) == "administrator"]


@pytest.fixture
def business() -> str:
    return f"clinic-{uuid.uuid4().hex[:8]}@contoso.test"


@pytest.fixture
async def api(app_env, issuer: TokenIssuer, business: str, monkeypatch) -> AsyncIterator[FakeDirectory]:
    monkeypatch.setenv("AUTH_ISSUER", issuer.issuer)
    monkeypatch.setenv("AUTH_JWKS_URL", issuer.jwks_url)
    reset_settings_cache()
    directory = FakeDirectory({business: ("Contoso Clinic", dict(ROLES)),
                               "salon@contoso.test": ("Contoso Salon", {"admin@contoso.test": "administrator"})})
    monkeypatch.setattr(bookings_directory, "get_directory", lambda: directory)
    store = get_store()
    await store.create_all()
    yield directory
    await store.close()


def request(method: str, path: str, route_params: dict[str, str], token: str | None = None,
            body: Any = None, headers: dict[str, str] | None = None) -> func.HttpRequest:
    all_headers = {"content-type": "application/json", **(headers or {})}
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    return func.HttpRequest(method, f"{BASE}/api/{path}", headers=all_headers, params={},
                            route_params=route_params, body=raw)


def flat(url: str = CALLBACK, change: str = "Created") -> dict[str, Any]:
    return {"notificationURL": url, "resource": "Appointments", "changeType": [change]}


def nested(url: str = CALLBACK, change: str = "Created") -> dict[str, Any]:
    return {"webhook": {"notification_url": url, "resource": "Appointments", "change_type": [change]}}


async def post(business: str, token: str | None, body: Any = None, trigger: str = "AppointmentCreated",
               **kw: Any) -> func.HttpResponse:
    body = flat(change=registrations.TRIGGERS.get(trigger, "Created")) if body is None else body
    req = request("POST", f"v1/bookingBusinesses/{business}/webhooks/{trigger}",
                  {"smtp": business, "name": trigger}, token, body, **kw)
    return await registration_api.webhook(req)


async def delete(business: str, webhook_id: str, token: str | None) -> func.HttpResponse:
    req = request("DELETE", f"v1/bookingBusinesses/{business}/webhooks/{webhook_id}",
                  {"smtp": business, "name": webhook_id}, token)
    return await registration_api.webhook(req)


async def list_flows(business: str, token: str | None) -> func.HttpResponse:
    req = request("GET", f"v1/bookingBusinesses/{business}/webhooks", {"smtp": business}, token)
    return await registration_api.list_webhooks(req)


def error_of(response: func.HttpResponse, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.get_body()
    error = json.loads(response.get_body())["error"]
    assert set(error) == {"code", "message", "remedy", "correlationId"}
    assert error["code"] == code
    assert response.headers["x-correlation-id"] == error["correlationId"]
    return error


async def flow_count(business: str) -> int:
    table = get_store().table(MAILBOX_TABLE)
    return len([e async for e in table.query_entities(
        "PartitionKey eq @pk and RowKey ge 'flow:' and RowKey lt 'flow;'", parameters={"pk": business})])


# --- registering ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", [flat, nested])
async def test_register_answers_201_with_location(api, issuer, business, spelling) -> None:
    response = await post(business.upper(), issuer.token(), spelling())
    assert response.status_code == 201, response.get_body()
    body = json.loads(response.get_body())
    assert set(body) == {"webhookId", "trigger", "businessSmtp", "createdDateTime"}
    assert body["trigger"] == "AppointmentCreated" and body["businessSmtp"] == business
    location = response.headers["Location"]
    assert location == f"{BASE}/api/v1/bookingBusinesses/{business}/webhooks/{body['webhookId']}"
    stored = await registrations.FlowRegistry(get_store().table(MAILBOX_TABLE), 5).get_flow(
        business, body["webhookId"])
    assert stored is not None and stored.callback_url == CALLBACK and stored.created_by_upn == "admin@contoso.test"


async def test_location_is_the_delete_route(api, issuer, business) -> None:
    response = await post(business, issuer.token())
    path = urlsplit(response.headers["Location"]).path
    template = f"/api/{registration_api.WEBHOOK_ROUTE}"
    parts, template_parts = path.split("/"), template.split("/")
    assert len(parts) == len(template_parts)
    params = {t[1:-1]: p for p, t in zip(parts, template_parts, strict=True) if t.startswith("{")}
    assert params["smtp"] == business
    assert (await delete(business, params["name"], issuer.token())).status_code == 204
    assert await flow_count(business) == 0


@pytest.mark.parametrize("trigger", list(registrations.TRIGGERS))
async def test_every_trigger(api, issuer, business, trigger) -> None:
    body = flat(change=registrations.TRIGGERS[trigger])
    if trigger in OFFSET_RANGES:
        body["offsetMinutes"] = 60
    response = await post(business, issuer.token(), body, trigger=trigger.lower())  # route names: any case
    assert response.status_code == 201
    assert json.loads(response.get_body())["trigger"] == trigger


async def test_registrations_removals_and_refusals_are_events_the_flows_tile_counts(api, issuer, business) -> None:
    from tests.app_insights import capture, dimensions
    from tests.infra.conftest import INFRA

    with capture() as captured:
        ids = [json.loads((await post(business, issuer.token(), trigger=t)).get_body())["webhookId"]
               for t in ("AppointmentCreated", "AppointmentUpdated")]
        assert (await delete(business, ids[0], issuer.token())).status_code == 204
        error_of(await post(business, issuer.token(), flat(url="https://evil.example/")), 403,
                 "NotificationUrlNotAllowed")
    found = [(e["name"], dimensions(e)) for e in captured.rows()["customEvents"]]
    assert [(n, d["flowCount"]) for n, d in found if n in ("FlowRegistered", "FlowUnregistered")] == [
        ("FlowRegistered", "1"), ("FlowRegistered", "2"), ("FlowUnregistered", "1")]
    (refused,) = [d for n, d in found if n == "FlowRegistrationRejected"]
    assert (refused["errorCode"], refused["status"], refused["mailbox"]) == ("NotificationUrlNotAllowed", "403",
                                                                             business)
    # The workbook's flows-per-mailbox tile: one flow left on the business, of 5.
    (tile,) = captured.query((INFRA / "queries" / "flows-per-mailbox.kql").read_text())
    assert (tile["mailbox"], tile["flowCount"], tile["maxFlows"]) == (business, 1, 5)


@pytest.mark.parametrize(("trigger", "offset", "status", "stored"), [
    ("AppointmentStarting", 5, 201, 5), ("AppointmentStarting", "10080", 201, 10_080),
    ("AppointmentStarting", 4, 400, None), ("AppointmentStarting", None, 400, None),
    ("AppointmentStarting", 10_081, 400, None), ("AppointmentStarting", 7.5, 400, None),
    ("AppointmentEnded", None, 201, 0), ("AppointmentEnded", 0, 201, 0), ("AppointmentEnded", -1, 400, None),
    ("AppointmentCreated", 30, 201, None),  # the other triggers take no offset
])
async def test_time_relative_triggers_take_an_offset_in_their_range(api, issuer, business, trigger, offset, status,
                                                                    stored) -> None:
    body = flat(change=registrations.TRIGGERS[trigger])
    if offset is not None:
        body["offsetMinutes"] = offset
    response = await post(business, issuer.token(), body, trigger=trigger)
    assert response.status_code == status, response.get_body()
    if status == 201:
        flow = await FlowRegistry.default().get_flow(business, json.loads(response.get_body())["webhookId"])
        assert flow is not None and flow.offset_minutes == stored
        assert flow.listing()["offsetMinutes"] == stored
    else:
        assert json.loads(response.get_body())["error"]["code"] == "InvalidRequest"
        assert await flow_count(business) == 0


# --- rule 1: 401 ----------------------------------------------------------------------------------------

def _unsigned(issuer: TokenIssuer) -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    return f"{header}.{issuer.token().split('.')[1]}."


def bad_tokens(issuer: TokenIssuer) -> dict[str, str | None]:
    now = int(time.time())
    return {
        "missing": None,
        "expired": issuer.token(exp=now - 3600),
        "not yet valid": issuer.token(nbf=now + 3600),
        "wrong audience": issuer.token(aud="api://other"),
        "wrong issuer": issuer.token(iss="https://login.microsoftonline.com/other/v2.0"),
        "unsigned": _unsigned(issuer),
        "bad signature": issuer.token(key=new_rsa_key()),
        "malformed": "not-a-jwt",
    }


async def test_bad_tokens_get_401_before_anything_else(api, issuer, business) -> None:
    for kind, token in bad_tokens(issuer).items():
        # Even with a bad URL and an unknown business, authentication is judged first.
        response = await post("nobody@nowhere.test", token, flat(url="http://10.0.0.1/x"))
        error = error_of(response, 401, "Unauthenticated")
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), kind
        assert error["remedy"]
        assert (await delete(business, str(uuid.uuid4()), token)).status_code == 401, kind
        assert (await list_flows(business, token)).status_code == 401, kind
    assert api.calls == []  # the directory was never asked


# --- rule 3: administrators only --------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["viewer@contoso.test", "scheduler@contoso.test", "member@contoso.test",
                                  "guest@contoso.test", "external@contoso.test", "outsider@contoso.test"])
async def test_only_administrators_register(api, issuer, business, user) -> None:
    # A bad URL too: the role is judged first, as Microsoft's connector does.
    error = error_of(await post(business, issuer.token(user), flat(url="https://evil.example/x")),
                     403, "NotBookingsAdministrator")
    assert business in error["message"] and "administrator" in error["remedy"].lower()
    assert await flow_count(business) == 0


async def test_unknown_business_is_404(api, issuer) -> None:
    error_of(await post("nobody@contoso.test", issuer.token()), 404, "BookingBusinessNotFound")


async def test_demotion_takes_effect_at_once(api, issuer, business) -> None:
    assert (await post(business, issuer.token("admin2@contoso.test"))).status_code == 201
    api.businesses[business][1]["admin2@contoso.test"] = "viewer"
    error_of(await post(business, issuer.token("admin2@contoso.test")), 403, "NotBookingsAdministrator")


# --- rule 5: the callback URL ------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["https://evil.example/hook?sig=TOP-SECRET-SIG", "http://10.0.0.1/x?sig=TOP-SECRET-SIG",
                                 "https://a.logic.azure.com@evil.example/?sig=TOP-SECRET-SIG", "ftp://127.0.0.1/x"])
async def test_callback_url_not_allowed(api, issuer, business, url) -> None:
    error = error_of(await post(business, issuer.token(), flat(url=url)), 403, "NotificationUrlNotAllowed")
    assert "TOP-SECRET" not in json.dumps(error)
    assert await flow_count(business) == 0


async def test_production_policy_refuses_loopback(api, issuer, business, monkeypatch) -> None:
    monkeypatch.setenv("ALLOW_LOOPBACK_CALLBACKS", "false")
    reset_settings_cache()
    error_of(await post(business, issuer.token()), 403, "NotificationUrlNotAllowed")


# --- rule 6: the flow limit --------------------------------------------------------------------------------

async def test_sixth_flow_gets_429_naming_how_many_exist(api, issuer, business) -> None:
    for trigger in ["AppointmentCreated", "AppointmentUpdated", "AppointmentDeleted", "AppointmentCreated",
                    "AppointmentUpdated"]:
        assert (await post(business, issuer.token("admin2@contoso.test"), trigger=trigger)).status_code == 201
    error = error_of(await post(business, issuer.token()), 429, "FlowLimitReached")
    assert "5" in error["message"] and "5" in error["remedy"]
    ja = error_of(await post(business, issuer.token(), headers={"accept-language": "ja-JP"}), 429,
                  "FlowLimitReached")
    assert "上限" in ja["message"] and "5" in ja["remedy"]
    # The URL rule comes before the limit.
    error_of(await post(business, issuer.token(), flat(url="https://evil.example/")), 403,
             "NotificationUrlNotAllowed")


async def test_fifty_parallel_registrations_through_the_handler(api, issuer, business) -> None:
    token = issuer.token()
    responses = await asyncio.gather(*(post(business, token) for _ in range(50)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 5 and statuses.count(429) == 45
    assert await flow_count(business) == 5


# --- 400s ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("smtp", "trigger", "body", "reason"),
    [
        ("not-an-address", "AppointmentCreated", None, "SMTP"),
        ("a/b@contoso.test", "AppointmentCreated", None, "SMTP"),
        ("clinic@contoso.test#x", "AppointmentCreated", None, "SMTP"),
        ("{business}", "AppointmentExploded", None, "trigger"),
        ("{business}", "AppointmentCreated", b"not json", "JSON"),
        ("{business}", "AppointmentCreated", b"", "JSON"),
        ("{business}", "AppointmentCreated", [1, 2], "object"),
        ("{business}", "AppointmentCreated", {"resource": "Appointments"}, "notificationURL"),
        ("{business}", "AppointmentCreated", {**flat(), "resource": "Events"}, "resource"),
        ("{business}", "AppointmentCreated", flat(change="Deleted"), "changeType"),
        ("{business}", "AppointmentCreated", {**flat(), "changeType": 7}, "changeType"),
        ("{business}", "AppointmentCreated", b"\xff\xfe", "JSON"),
    ],
)
async def test_bad_requests_get_400(api, issuer, business, smtp, trigger, body, reason) -> None:
    response = await post(smtp.replace("{business}", business), issuer.token(), body if body is not None else flat(),
                          trigger=trigger)
    error = error_of(response, 400, "InvalidRequest")
    assert reason in error["message"]


async def test_body_too_large(api, issuer, business) -> None:
    body = json.dumps({**flat(), "padding": "x" * 70_000}).encode()
    error_of(await post(business, issuer.token(), body), 413, "PayloadTooLarge")


async def test_flat_change_type_as_a_string_is_accepted(api, issuer, business) -> None:
    assert (await post(business, issuer.token(), {"notificationURL": CALLBACK, "changeType": "created"})).status_code \
        == 201


async def test_other_methods_are_405(api, issuer, business) -> None:
    req = request("PUT", f"v1/bookingBusinesses/{business}/webhooks/x?code=SECRETKEY", {"smtp": business, "name": "x"},
                  issuer.token())
    error = error_of(await registration_api.webhook(req), 405, "MethodNotAllowed")
    assert "SECRETKEY" not in json.dumps(error)


# --- deleting -----------------------------------------------------------------------------------------------

async def test_delete_is_204_and_idempotent_and_releases_the_last_flow(api, issuer, business, monkeypatch) -> None:
    emptied: list[str] = []

    async def hook(smtp: str) -> None:
        emptied.append(smtp)

    monkeypatch.setattr(subscriptions, "release_if_no_flows", hook)
    ids = [json.loads((await post(business, issuer.token())).get_body())["webhookId"] for _ in range(2)]
    assert (await delete(business, ids[0], issuer.token())).status_code == 204
    assert emptied == []
    assert (await delete(business.upper(), ids[1], issuer.token())).status_code == 204
    assert emptied == [business]
    for webhook_id in ids:  # Power Automate retries deletes: still 204, hook not called again
        response = await delete(business, webhook_id, issuer.token())
        assert response.status_code == 204 and response.get_body() == b""
    assert emptied == [business] and await flow_count(business) == 0


async def test_creator_may_delete_after_demotion_others_may_not(api, issuer, business) -> None:
    webhook_id = json.loads((await post(business, issuer.token("admin2@contoso.test"))).get_body())["webhookId"]
    api.businesses[business][1]["admin2@contoso.test"] = "viewer"
    error_of(await delete(business, webhook_id, issuer.token("viewer@contoso.test")), 403, "NotBookingsAdministrator")
    assert await flow_count(business) == 1
    assert (await delete(business, webhook_id, issuer.token("admin2@contoso.test"))).status_code == 204
    assert await flow_count(business) == 0


async def test_another_administrator_may_delete(api, issuer, business) -> None:
    webhook_id = json.loads((await post(business, issuer.token("admin2@contoso.test"))).get_body())["webhookId"]
    assert (await delete(business, webhook_id, issuer.token("admin@contoso.test"))).status_code == 204


async def test_delete_with_a_foreign_id_is_400(api, issuer, business) -> None:
    error_of(await delete(business, "flow'or'1", issuer.token()), 400, "InvalidRequest")


# --- the subscription seam -----------------------------------------------------------------------------------

async def test_failing_first_flow_hook_leaves_nothing_behind(api, issuer, business, monkeypatch) -> None:
    async def graph_refuses(smtp: str) -> None:
        raise ApiError("DependencyUnavailable", dependency="Microsoft Graph subscriptions")

    monkeypatch.setattr(subscriptions, "ensure", graph_refuses)
    error_of(await post(business, issuer.token()), 503, "DependencyUnavailable")
    assert await flow_count(business) == 0
    registry = registrations.FlowRegistry(get_store().table(MAILBOX_TABLE), 5)
    assert await registry.flow_count(business) == 0


# --- listings ------------------------------------------------------------------------------------------------

async def test_list_flows_for_administrators(api, issuer, business) -> None:
    await post(business, issuer.token("admin2@contoso.test"), trigger="AppointmentDeleted")
    await post(business, issuer.token())
    response = await list_flows(business, issuer.token())
    assert response.status_code == 200
    body = json.loads(response.get_body())
    assert body["businessSmtp"] == business and body["maxFlows"] == 5
    assert [(w["trigger"], w["createdByUpn"]) for w in body["webhooks"]] == [
        ("AppointmentDeleted", "admin2@contoso.test"), ("AppointmentCreated", "admin@contoso.test")]
    assert all(w["callbackHostPath"] == "http://127.0.0.1:8999/receiver/flow-1" for w in body["webhooks"])
    assert "TOP-SECRET" not in response.get_body().decode() and "sig=" not in response.get_body().decode()
    error_of(await list_flows(business, issuer.token("viewer@contoso.test")), 403, "NotBookingsAdministrator")


async def test_businesses_where_the_caller_is_administrator(api, issuer, business) -> None:
    req = request("GET", "v1/bookingBusinessesUserAsAdmin", {}, issuer.token("Admin@Contoso.test"))
    body = json.loads((await registration_api.businesses_as_admin(req)).get_body())
    assert body == {"mailboxes": [{"displayName": "Contoso Clinic", "email": business},
                                  {"displayName": "Contoso Salon", "email": "salon@contoso.test"}]}
    req = request("GET", "v1/bookingBusinessesUserAsAdmin", {}, issuer.token("viewer@contoso.test"))
    assert json.loads((await registration_api.businesses_as_admin(req)).get_body()) == {"mailboxes": []}
    error_of(await registration_api.businesses_as_admin(request("GET", "x", {}, None)), 401, "Unauthenticated")


# --- failures inside, and secrets in logs -----------------------------------------------------------------------

async def test_a_directory_crash_is_a_500_with_a_correlation_id_in_the_logs(api, issuer, business, monkeypatch,
                                                                            caplog) -> None:
    async def broken(smtp: str, upn: str) -> str | None:
        raise RuntimeError("directory exploded")

    monkeypatch.setattr(api, "staff_role", broken)
    with caplog.at_level(logging.ERROR):
        error = error_of(await post(business, issuer.token()), 500, "InternalError")
    assert error["correlationId"] in error["remedy"]
    assert "directory exploded" in caplog.text
    assert any(getattr(r, "correlationId", None) == error["correlationId"] for r in caplog.records)


async def test_no_callback_secret_or_token_in_logs(api, issuer, business, caplog) -> None:
    token = issuer.token()
    with caplog.at_level(logging.DEBUG):
        webhook_id = json.loads((await post(business, token)).get_body())["webhookId"]
        await post(business, token, flat(url="https://evil.example/x?sig=TOP-SECRET-SIG"))
        await post(business, issuer.token(exp=int(time.time()) - 3600))
        await list_flows(business, token)
        await delete(business, webhook_id, token)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "registered" in text  # something was logged at all
    assert "TOP-SECRET" not in text and token not in text and "sig=" not in text


# --- fuzzing: whatever arrives, the answer is a catalogued error or a success, never a 5xx ---------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8)
_url_like = st.one_of(st.text(max_size=40), st.sampled_from([CALLBACK, "http://localhost:1/x", "https://evil.example",
                                                             "http://[::1]:70000/", "https://%zz/", "http://127.0.0.1:0/"]))
_body = st.one_of(
    st.binary(max_size=64),
    _json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"notificationURL": _url_like}, optional={"resource": _json, "changeType": _json})
    .map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"webhook": st.fixed_dictionaries({"notification_url": _url_like},
                                                            optional={"change_type": _json})})
    .map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(smtp=st.one_of(st.text(max_size=30), st.just("{business}")),
       name=st.one_of(st.text(max_size=20), st.sampled_from([*registrations.TRIGGERS, str(uuid.uuid4())])),
       method=st.sampled_from(["POST", "DELETE", "GET", "PATCH"]), body=_body)
async def test_fuzzed_requests_never_get_a_5xx(api, issuer, business, smtp, name, method, body) -> None:
    api.businesses[business][1]["admin@contoso.test"] = "administrator"
    smtp = smtp.replace("{business}", business)
    req = func.HttpRequest(method, f"{BASE}/api/x", headers={"authorization": f"Bearer {issuer.token()}"},
                           params={}, route_params={"smtp": smtp, "name": name}, body=body)
    response = await registration_api.webhook(req)
    assert response.status_code < 500, response.get_body()
    if response.status_code >= 400:
        assert set(json.loads(response.get_body())["error"]) == {"code", "message", "remedy", "correlationId"}
