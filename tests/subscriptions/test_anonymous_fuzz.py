"""The anonymous routes (Graph's two notification URLs, the health probe) fuzzed: whatever arrives, the
answer is a 2xx or a catalogued JSON error below 500, and an authentic notification in the same batch is
never lost.

The real handlers, called as the Functions runtime calls them (func.HttpRequest in, out), against Azurite:
the subscription index, the hint writer and the queues are real. Inputs: deep nesting (in the body and
inside items), lone surrogates (JSON ``\\ud800`` escapes and invalid UTF-8), odd subscription ids (``a/b``,
control characters, 10 KB, non-strings), huge numbers (past Python's 4,300-digit limit, ``1e999``),
wrong types everywhere, and floods of made-up ids. The named cases from issue 13 are pinned first.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient
from cachetools import TTLCache
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.adapters.storage import MAILBOX_CHANGES_QUEUE
from shared.endpoints import graph_lifecycle, graph_notifications, graph_requests, health
from shared.records import subscription_index

BASE = "http://127.0.0.1:7071"
CLINIC = "clinic@contoso.test"
CLIENT_STATE = "right-client-state-" + "x" * 45
ERROR_KEYS = {"code", "message", "remedy", "correlationId"}
ROUTES = {"notifications": graph_notifications.handle, "lifecycle": graph_lifecycle.handle}


@pytest.fixture
async def known(clean_env) -> str:
    """A subscription in the index (what a registration leaves behind); its id."""
    sid = str(uuid.uuid4())
    await subscription_index.put(sid, CLINIC, CLIENT_STATE, datetime.now(UTC) + timedelta(days=2))
    return sid


def request(body: bytes, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
            method: str = "POST", path: str = "/api/graph/notifications") -> func.HttpRequest:
    return func.HttpRequest(method, f"{BASE}{path}", headers={"content-type": "application/json", **(headers or {})},
                            params=params or {}, route_params={}, body=body)


def assert_answer_kept_the_contract(response: func.HttpResponse) -> None:
    assert response.status_code < 500, response.get_body()[:500]
    if response.status_code >= 300:
        error = json.loads(response.get_body())["error"]
        assert set(error) == ERROR_KEYS and all(isinstance(v, str) and v for v in error.values())


def hinted_events(azurite) -> list[str]:
    client = QueueClient.from_connection_string(azurite.connection_string, MAILBOX_CHANGES_QUEUE)
    events = []
    while batch := list(client.receive_messages(max_messages=32)):
        for message in batch:
            body = json.loads(base64.b64decode(message.content))
            events += [c["eventId"] for m in body.get("bundle", [body]) for c in m["changes"]]
            client.delete_message(message)
    return events


def genuine(sid: str, event: str) -> dict[str, Any]:
    return {"subscriptionId": sid, "clientState": CLIENT_STATE, "changeType": "updated",
            "resource": f"Users/0000/Events/{event}", "tenantId": "t",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": event}}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- the cases issue 13 reproduced, and their neighbours ------------------------------------------------------

@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("body", [
    '{"value": [' + nested(100_000) + "]}",  # RecursionError in json.loads
    nested(5000),
    '{"value": [{"subscriptionId": "s", "resourceData": ' + nested(50_000) + "}]}",
    '{"value": [{"subscriptionId": ' + "1" * 5000 + "}]}",  # past int("…")'s 4,300-digit limit
    '{"value": "nope"}', "[1, 2]", '{"value": [1]}', '{"value": [null]}', "null", "1e999", '"\\ud800"',
], ids=["nested-value", "nested-root", "nested-item", "huge-int", "value-string", "list", "int-item", "null-item",
        "null", "huge-float", "surrogate-string"])
async def test_malformed_bodies_are_400_json_errors(clean_env, route: str, body: str) -> None:
    response = await ROUTES[route](request(body.encode()))
    assert response.status_code == 400, response.get_body()[:300]
    assert json.loads(response.get_body())["error"]["code"] == "InvalidRequest"


async def test_invalid_utf8_is_a_400_and_an_encoded_surrogate_a_dropped_item(known) -> None:
    response = await graph_notifications.handle(request(b'{"value": [\xff]}'))
    assert response.status_code == 400
    assert json.loads(response.get_body())["error"]["code"] == "InvalidRequest"
    # json.loads reads UTF-8-encoded surrogates (CESU) as lone surrogates: the item's clientState is just wrong.
    body = b'{"value": [{"subscriptionId": "' + known.encode() + b'", "clientState": "\xed\xa0\x80"}]}'
    response = await graph_notifications.handle(request(body))
    assert response.status_code == 202


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_odd_items_are_dropped_and_the_authentic_one_goes_through(known, azurite, route: str) -> None:
    odd: list[dict[str, Any]] = [
        {**genuine(known, "e"), "clientState": "\ud800"},  # lone surrogate: str.encode() failed in the compare
        {**genuine(known, "e"), "clientState": "\udfff" * 64},
        {**genuine(known, "e"), "clientState": 10 ** 40},
        {**genuine(known, "e"), "clientState": {"a": [1]}},
        *({**genuine(sid, "e")} for sid in ("a/b", "a\\b", "#", "?x", "a\x00b", "a\x7fb", "\ud800", "x" * 10_000,
                                            " ", "'", "''", "%2F", "..", "a'b", "\u2028", "é" * 300)),
        *({**genuine(known, "e"), "subscriptionId": sid} for sid in (1, 10 ** 30, 1.5, None, True, [known], {})),
    ]
    if route == "lifecycle":
        odd += [{"subscriptionId": known, "clientState": CLIENT_STATE, "lifecycleEvent": e}
                for e in ("\ud800", [["missed"]], {"x": 1}, 10 ** 30, "unknown")]
    event = f"evt-{uuid.uuid4()}"
    item = genuine(known, event) if route == "notifications" else {
        "subscriptionId": known, "clientState": CLIENT_STATE, "lifecycleEvent": "missed"}
    hinted_events(azurite)
    # json.dumps writes a lone surrogate as the "\ud800" escape Graph's JSON could carry.
    response = await ROUTES[route](request(json.dumps({"value": [*odd, item, *odd]}).encode()))
    assert response.status_code == 202, response.get_body()
    client = QueueClient.from_connection_string(azurite.connection_string, MAILBOX_CHANGES_QUEUE)
    bodies = [json.loads(base64.b64decode(m.content)) for m in client.receive_messages(max_messages=32)]
    client.clear_messages()
    if route == "notifications":
        assert [c["eventId"] for b in bodies for c in b["changes"]] == [event]
    else:
        assert [(b["mailbox"], b["fullResync"], b["reason"]) for b in bodies] == [(CLINIC, True, "missed")]


async def test_an_event_id_that_graph_could_not_be_asked_about_becomes_a_full_resync(known, azurite) -> None:
    hinted_events(azurite)
    items = [genuine(known, "\ud800"), genuine(known, "a\x00b"), genuine(known, "fine")]
    response = await graph_notifications.handle(request(json.dumps({"value": items}).encode()))
    assert response.status_code == 202
    client = QueueClient.from_connection_string(azurite.connection_string, MAILBOX_CHANGES_QUEUE)
    [body] = [json.loads(base64.b64decode(m.content)) for m in client.receive_messages(max_messages=32)]
    client.clear_messages()
    assert body["fullResync"] is True and body["changes"] == [{"changeType": "updated", "eventId": "fine"}]


async def test_each_item_of_a_subscription_is_checked_against_its_own_client_state(known, azurite) -> None:
    # One POST, one subscription, the right and a wrong clientState alternating (the checks of one POST are
    # shared per value: a wrong one seen after the right one must stay wrong), and a changeType Graph does not
    # send today, which is kept as it is.
    items = [genuine(known, "good-1"), {**genuine(known, "bad-1"), "clientState": "forged"},
             {**genuine(known, "good-2"), "changeType": "renamed"},
             {**genuine(known, "bad-2"), "clientState": "forged"},
             {**genuine(known, "bad-3"), "clientState": CLIENT_STATE[:-1]}]
    hinted_events(azurite)
    response = await graph_notifications.handle(request(json.dumps({"value": items}).encode()))
    assert response.status_code == 202
    client = QueueClient.from_connection_string(azurite.connection_string, MAILBOX_CHANGES_QUEUE)
    [body] = [json.loads(base64.b64decode(m.content)) for m in client.receive_messages(max_messages=32)]
    client.clear_messages()
    assert body["changes"] == [{"changeType": "updated", "eventId": "good-1"},
                               {"changeType": "renamed", "eventId": "good-2"}]


@pytest.mark.parametrize("token", ["\ud800", "ok\udfffok", "x" * 2000])
async def test_an_unsendable_validation_token_is_a_400(clean_env, token: str) -> None:
    for handle in ROUTES.values():
        response = await handle(request(b"", params={"validationToken": token}))
        assert response.status_code == 400
        assert json.loads(response.get_body())["error"]["code"] == "InvalidRequest"


# --- made-up ids: cached as unknown for a while, and capped per POST ------------------------------------------

async def test_made_up_ids_cost_at_most_a_round_of_reads_and_are_then_known_unknown(known, azurite,
                                                                                   monkeypatch) -> None:
    reads: list[str] = []
    real_read = subscription_index._read

    async def counting_read(sid: str):
        reads.append(sid)
        return await real_read(sid)

    monkeypatch.setattr(subscription_index, "_read", counting_read)
    flood = [{**genuine(str(uuid.uuid4()), "e"), "clientState": "guess"} for _ in range(500)]
    response = await graph_notifications.handle(request(json.dumps({"value": flood}).encode()))
    assert response.status_code == 202
    assert len(reads) == graph_requests.LOOKUPS_PER_ROUND  # not 500
    first_round = set(reads)
    assert all(subscription_index.known_unknown(s) for s in first_round)

    reads.clear()  # the same POST again: the ids read last time are known unknown, the next 20 get read
    await graph_notifications.handle(request(json.dumps({"value": flood}).encode()))
    assert len(reads) == graph_requests.LOOKUPS_PER_ROUND and not first_round & set(reads)


async def test_a_genuine_batch_naming_many_cold_subscriptions_loses_nothing(clean_env, azurite) -> None:
    """The cap is for POSTs that show nothing authentic; Graph's own batch is read whole."""
    expires = datetime.now(UTC) + timedelta(days=2)
    sids = [str(uuid.uuid4()) for _ in range(3 * graph_requests.LOOKUPS_PER_ROUND + 5)]
    for n, sid in enumerate(sids):
        await subscription_index.put(sid, f"m{n}@contoso.test", CLIENT_STATE, expires)
    subscription_index._cache.clear()  # as after a restart: every id is cold
    hinted_events(azurite)
    response = await graph_notifications.handle(
        request(json.dumps({"value": [genuine(sid, f"evt-{n}") for n, sid in enumerate(sids)]}).encode()))
    assert response.status_code == 202
    assert sorted(hinted_events(azurite)) == sorted(f"evt-{n}" for n in range(len(sids)))


async def test_a_new_subscriptions_index_write_clears_its_unknown_entry(clean_env) -> None:
    sid = str(uuid.uuid4())
    assert await subscription_index.lookup(sid) is None  # a notification racing the index row
    assert subscription_index.known_unknown(sid)
    await subscription_index.put(sid, CLINIC, CLIENT_STATE, datetime.now(UTC) + timedelta(days=2))
    assert not subscription_index.known_unknown(sid)
    entry = await subscription_index.lookup(sid)
    assert entry is not None and entry.mailbox == CLINIC


async def test_a_read_overlapping_the_index_write_records_no_absence(clean_env, monkeypatch) -> None:
    """The read started before put() and answered "absent" after it: that absence must not be kept."""
    sid = str(uuid.uuid4())
    table = subscription_index._table()
    real_get = table.get_entity

    async def get_then_put(*args, **kwargs):
        try:
            return await real_get(*args, **kwargs)
        finally:
            await subscription_index.put(sid, CLINIC, CLIENT_STATE, datetime.now(UTC) + timedelta(days=2))

    monkeypatch.setattr(table, "get_entity", get_then_put)
    monkeypatch.setattr(subscription_index, "_table", lambda: table)
    assert await subscription_index.lookup(sid) is None
    assert not subscription_index.known_unknown(sid)


async def test_unknown_entries_expire(clean_env, monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr(subscription_index, "_unknown", TTLCache(10, subscription_index.UNKNOWN_SECONDS,
                                                                 timer=lambda: now[0]))
    sid = str(uuid.uuid4())
    await subscription_index.lookup(sid)
    assert subscription_index.known_unknown(sid)
    now[0] += subscription_index.UNKNOWN_SECONDS  # its UNKNOWN_SECONDS are over
    assert not subscription_index.known_unknown(sid)


# --- fuzzing ----------------------------------------------------------------------------------------------------

_chars = st.characters() | st.characters(categories=["Cs"]) | st.sampled_from("/\\#?'\"\x00\x7f\u2028")
_text = st.text(_chars, max_size=24)
_huge = st.sampled_from([10 ** 30, -(10 ** 30), 2 ** 63, 2 ** 64 + 1, 1e308, -1e308, 5e-324, float("inf"),
                         float("nan")])
_leaf = st.none() | st.booleans() | st.integers() | _huge | st.floats() | _text
_json = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                     max_leaves=10)
_odd_id = st.one_of(_text, st.sampled_from(["a/b", "a\\b", "#", "?", "\ud800", "x" * 2000, "", " ", "'"]),
                    st.uuids().map(str), _json)


def _item(known: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "subscriptionId": st.just(known) | _odd_id,
        "clientState": st.just(CLIENT_STATE) | _text | _json,
        "changeType": st.sampled_from(["created", "updated", "deleted"]) | _text | _json,
        "resource": _text | _json,
        "resourceData": st.fixed_dictionaries({}, optional={"id": _text | _json}) | _json,
        "lifecycleEvent": st.sampled_from(["missed", "reauthorizationRequired", "subscriptionRemoved"]) | _json,
        "subscriptionExpirationDateTime": _text | _json,
    })


def _raw(document: Any) -> bytes:
    """JSON as Graph's parser would read it: lone surrogates as \\u escapes, NaN/Infinity as Python writes them."""
    return json.dumps(document).encode()


_deep = st.integers(1, 3000).map(lambda depth: ("[" * depth + "]" * depth).encode())
_raw_bodies = st.one_of(
    st.binary(max_size=64), _deep,
    _deep.map(lambda nest: b'{"value": [{"subscriptionId": "s", "clientState": ' + nest + b"}]}"),
    st.integers(4000, 6000).map(lambda digits: b'{"value": [{"changeType": ' + b"9" * digits + b"}]}"),
    _json.map(_raw),
)


def _body(known: str) -> st.SearchStrategy[tuple[bytes, bool]]:
    """A body, and whether it carries an authentic notification (which must then reach the queue)."""
    items = st.lists(_item(known), max_size=8)
    return st.one_of(
        _raw_bodies.map(lambda b: (b, False)),
        st.lists(_item(known) | _json, max_size=8).map(lambda v: (_raw({"value": v}), False)),
        st.tuples(items, st.integers(0, 8)).map(
            lambda t: (_raw({"value": [*t[0][:t[1]], genuine(known, "AUTHENTIC"), *t[0][t[1]:]]}), True)),
        st.lists(_odd_id, max_size=60).map(lambda ids: (_raw({"value": [genuine(i, "e") if isinstance(i, str)
                                                                        else {"subscriptionId": i} for i in ids]}),
                                                        False)),
    )


_params = st.dictionaries(st.sampled_from(["validationToken", "x"]), _text, max_size=1)


@pytest.mark.parametrize("route", sorted(ROUTES))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.data(), params=_params, language=st.none() | _text)
async def test_fuzzed_notification_posts_never_get_a_5xx_and_lose_nothing_authentic(
        known, azurite, route, body, params: dict[str, str], language: str | None) -> None:
    raw, authentic = body.draw(_body(known))
    headers = {"accept-language": language} if language is not None else {}
    response = await ROUTES[route](request(raw, params, headers))
    assert_answer_kept_the_contract(response)
    events = hinted_events(azurite)
    if authentic and "validationToken" not in params:
        assert response.status_code == 202
        if route == "notifications":
            assert "AUTHENTIC" in events


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "POST", "HEAD"]), body=st.binary(max_size=32) | _json.map(_raw),
       params=st.dictionaries(_text, _text, max_size=2), language=st.none() | _text)
async def test_fuzzed_health_probes_answer_only_up_or_down(clean_env, method: str, body: bytes,
                                                         params: dict[str, str], language: str | None) -> None:
    headers = {"accept-language": language} if language is not None else {}
    response = await health.handle(request(body, params, headers, method=method, path="/api/health"))
    assert response.status_code == 200, response.get_body()
    assert set(json.loads(response.get_body())) == {"status", "dependencies"}


@pytest.mark.slow
@pytest.mark.parametrize("route", sorted(ROUTES))
@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.data())
async def test_fuzzed_notification_posts_heavier(known, azurite, route, body) -> None:
    raw, authentic = body.draw(_body(known))
    response = await ROUTES[route](request(raw))
    assert_answer_kept_the_contract(response)
    events = hinted_events(azurite)
    if authentic:
        assert response.status_code == 202
        if route == "notifications":
            assert "AUTHENTIC" in events
