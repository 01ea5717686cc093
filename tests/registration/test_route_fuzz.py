"""Every HTTP route of function_app.py fuzzed, signed in as a sandbox administrator: whatever arrives, the answer is
below 500 and, when not a success, the catalogued JSON error.

The routes are read from ``function_app.app`` itself (a new route is fuzzed without editing this file) and called
as the Functions runtime calls them (func.HttpRequest in, out): storage is Azurite, Graph and Entra the sandbox
over real HTTP, the caller a valid sandbox user token. Inputs: the cases issue 25 reproduced (deep JSON nesting on
register, create and cancel; years near 9999; non-ASCII digits in ``top``; ids with ``/ ? # \\`` or control
characters; ``.``, ``..`` and their encodings), then hypothesis: odd route values, query parameters, bodies and
headers per route. The anonymous routes' own properties are tests/subscriptions/test_anonymous_fuzz.py; the
strategies come from there.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
from collections.abc import Awaitable, Callable
from unittest import mock

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.services import bookings_directory
from tests.subscriptions.test_anonymous_fuzz import _json, _raw, _text, assert_answer_kept_the_contract, nested

BASE = "http://127.0.0.1:7071/api/"
CLINIC = "clinic@contoso.test"
Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


@functools.cache  # the app indexes its functions once (a second get_functions() refuses the names as duplicates)
def http_routes() -> list[tuple[str, str, tuple[str, ...], Handler]]:
    """(function name, route template, methods, handler) of every HTTP function of the app."""
    # Imported for its routes only: without what importing it does to a process (logging set-up, the warm-up
    # thread, gc.freeze), which the rest of the test session must not inherit.
    with mock.patch("shared.adapters.logs.configure_logging"), mock.patch("shared.adapters.lazy_imports.warm_up"), \
            mock.patch("gc.freeze"):
        app = importlib.import_module("function_app").app
    routes = []
    for function in app.get_functions():
        trigger = function.get_trigger()
        if trigger.type == "httpTrigger":
            methods = tuple(str(getattr(m, "value", m)) for m in trigger.methods)
            routes.append((function.get_function_name(), trigger.route, methods, function.get_user_function()))
    return sorted(routes)


@pytest.fixture
def routes(clean_env, sandbox) -> dict[str, tuple[str, tuple[str, ...], Handler]]:
    bookings_directory.forget_cached()
    return {name: (route, methods, handler) for name, route, methods, handler in http_routes()}


@pytest.fixture
def admin(sandbox) -> dict[str, str]:
    return {"authorization": f"Bearer {sandbox.user_token('admin@contoso.test')}"}


def request(route: str, method: str, values: dict[str, str], *, body: bytes = b"",
            params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> func.HttpRequest:
    """The request the Functions host would hand over: route values decoded, the URL as sent."""
    path = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), route)
    return func.HttpRequest(method, BASE + path, headers={"content-type": "application/json", **(headers or {})},
                            params=params or {}, route_params=dict(values), body=body)


def defaults(route: str) -> dict[str, str]:
    """Plausible values for a route's parameters (the fuzzed one replaces its own)."""
    return {"smtp": CLINIC, "appointmentId": "AAMkADNoSuchAppointment=", "name": "AppointmentCreated",
            "webhookId": "7d2f2a52-1c1d-4b8e-9d51-8d3f1b7b9f00", "id": "nothing"} | {
        name: "x" for name in re.findall(r"\{(\w+)\}", route) if name not in
        ("smtp", "appointmentId", "name", "webhookId", "id")}


# --- the cases issue 25 reproduced ---------------------------------------------------------------------------

DEEP = ('{"a": ' + nested(100_000) + "}").encode()


@pytest.mark.parametrize(("name", "method", "values"), [
    ("flow_webhook", "POST", {}), ("appointments", "POST", {}), ("cancel_appointment", "POST", {}),
    ("test_event", "POST", {}), ("dead_letter_replay", "POST", {}), ("dead_letters_replay", "POST", {}),
])
@pytest.mark.parametrize("body", [DEEP, nested(5000).encode(), b"\xff\xfe", b'"\\ud800"', b"1e999"],
                         ids=["deep-in-object", "deep-root", "not-utf8", "surrogate", "huge-float"])
async def test_malformed_bodies_are_400_on_every_route_that_reads_one(routes, admin, name, method, values,
                                                                      body) -> None:
    route, _, handler = routes[name]
    response = await handler(request(route, method, defaults(route) | values, body=body, headers=admin))
    assert_answer_kept_the_contract(response)


@pytest.mark.parametrize("params", [
    {"startDateTime": "9999-12-31T23:59:59Z"}, {"startDateTime": "9999-12-31T00:00:00+14:00"},
    {"startDateTime": "0001-01-01T00:00:00Z"}, {"startDateTime": "0001-01-01T00:00:00-12:00"},
    {"endDateTime": "9999-12-31T23:59:59Z"}, {"startDateTime": "2030-01-01T00:00:00Z", "endDateTime": "9999-01-01"},
    {"top": "²"}, {"top": "١٢"}, {"top": "𝟙"}, {"after": "³"}, {"top": "1" * 5000}, {"after": "-1"}, {"top": " 5"},
    {"after": "W10"}, {"after": "WyIiLCIiLDEsIiJd"}, {"after": "é" * 10}, {"after": "x" * 5000},
])
async def test_odd_listing_parameters_are_400_or_a_listing(routes, admin, params) -> None:
    route, _, handler = routes["appointments"]
    response = await handler(request(route, "GET", defaults(route), params=params, headers=admin))
    assert_answer_kept_the_contract(response)
    if set(params) & {"top", "after"}:
        assert response.status_code == 400, response.get_body()


ODD_IDS = [".", "..", "...", "%2E%2E", "%2e.", ".%2E", "%252E%252E", "a/b", "a?b", "a#b", "a\\b", "a\x00b", "a\nb",
           "a\x7fb", "\ud800", "a b", "é", "a%2Fb", "x" * 600, ""]


@pytest.mark.parametrize("appointment_id", ODD_IDS)
@pytest.mark.parametrize("name", ["appointment", "cancel_appointment"])
async def test_ids_graph_never_issues_are_400_and_reach_no_graph_url(routes, admin, sandbox, name,
                                                                     appointment_id) -> None:
    route, methods, handler = routes[name]
    sandbox.control("DELETE", "requests")
    body = json.dumps({"reason": "because"}).encode()
    response = await handler(request(route, methods[0], defaults(route) | {"appointmentId": appointment_id},
                                     body=body, headers=admin))
    assert response.status_code == 400, response.get_body()
    assert json.loads(response.get_body())["error"]["code"] == "InvalidRequest"
    assert not [r for r in sandbox.requests() if "/appointments" in r["path"]]  # asked nothing about it


# --- fuzzing ------------------------------------------------------------------------------------------------

_odd_value = st.one_of(_text, st.sampled_from([*ODD_IDS, CLINIC, "CLINIC@CONTOSO.TEST", "a@b", "@",
                                               "AppointmentCreated",
                                               "7d2f2a52-1c1d-4b8e-9d51-8d3f1b7b9f00"]))
_times = st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2030-05-06T09:00:00Z", "2030-05-06",
                          "2030-05-06T09:00:00+14:00", "tomorrow", "", "1e999", "2030-02-30T00:00:00Z"])
_numbers = st.sampled_from(["²", "١٢", "𝟙", "-1", "0", "51", "1" * 400, " 5", "5 ", "0x10", "", "1.5"])
_params = st.dictionaries(st.sampled_from(["startDateTime", "endDateTime", "top", "after", "x"]),
                          _times | _numbers | _text, max_size=4)
_fields = st.sampled_from(["serviceId", "startDateTime", "endDateTime", "staffMemberId", "staffMemberIds",
                           "customerName", "customerEmail", "customerPhone", "customerNotes", "customerTimeZone",
                           "serviceNotes", "additionalInformation", "reason", "notificationURL", "webhook",
                           "notification_url", "serviceId", "staffMemberIds"])
_documents = st.dictionaries(_fields, _times | _json | _text, max_size=6)
_bodies = st.one_of(st.binary(max_size=48), _json.map(_raw), _documents.map(_raw),
                    st.integers(1, 3000).map(lambda depth: ('{"serviceId": ' + nested(depth) + "}").encode()))
_headers = st.fixed_dictionaries({}, optional={"accept-language": _text, "idempotency-key": _text})


async def one_fuzzed_request(routes, admin, data) -> None:
    name = data.draw(st.sampled_from(sorted(routes)))
    route, methods, handler = routes[name]
    values = defaults(route)
    for param in data.draw(st.sets(st.sampled_from(sorted(values)), max_size=2)):
        values[param] = data.draw(_odd_value)
    method = data.draw(st.sampled_from(methods) | st.sampled_from(["GET", "POST", "PATCH"]))
    headers = {**data.draw(_headers), **(admin if data.draw(st.integers(0, 9)) else {})}
    response = await handler(request(route, method, values, body=data.draw(_bodies), params=data.draw(_params),
                                     headers=headers))
    assert_answer_kept_the_contract(response)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_fuzzed_requests_to_every_route_never_get_a_5xx(routes, admin, data) -> None:
    await one_fuzzed_request(routes, admin, data)


@pytest.mark.slow
@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_fuzzed_requests_to_every_route_heavier(routes, admin, data) -> None:
    await one_fuzzed_request(routes, admin, data)


def test_every_http_route_is_fuzzed(app_env) -> None:
    """The fuzz draws from the app's own routes: all of them, anonymous ones included."""
    names = {name for name, *_ in http_routes()}
    assert {"appointments", "appointment", "cancel_appointment", "flow_webhook", "graph_notifications",
            "dead_letter_replay", "test_event", "health_check"} <= names and len(names) >= 16


@pytest.mark.parametrize("name", ["appointment", "cancel_appointment"])
async def test_an_id_graph_cannot_parse_is_no_such_appointment_never_a_5xx(routes, admin, sandbox, name) -> None:
    """Graph answers 400 ErrorInvalidIdMalformed for a well-spelt id it did not issue: 404, not 503."""
    route, methods, handler = routes[name]
    sandbox.add_fault(path="*/appointments/AAMkNotIssued*", status=400, code="ErrorInvalidIdMalformed", count=None)
    response = await handler(request(route, methods[0], defaults(route) | {"appointmentId": "AAMkNotIssued="},
                                     body=json.dumps({"reason": "because"}).encode(), headers=admin))
    assert response.status_code == 404, response.get_body()
    assert json.loads(response.get_body())["error"]["code"] == "AppointmentNotFound"
