"""``POST /v1.0/$batch``: JSON batching as https://learn.microsoft.com/en-us/graph/json-batching documents it.

A batch holds at most 20 requests (``{"requests": [{"id", "method", "url", "headers"?, "body"?}]}``, ``url``
relative to the version: ``/users/…``); more, none, or two with one id answer 400. Each request runs as if sent on
its own with the batch's token, through the same gate (request log, token and permission check, limits, faults), so
each is throttled on its own: Graph evaluates the requests of a batch individually against its limits (the same
page, "Throttling and batching"; https://learn.microsoft.com/en-us/graph/throttling). The answer is 200 with
``{"responses": [{"id", "status", "headers", "body"}]}``, one per request, in any order; a throttled one has its
own 429 and ``Retry-After``. ``dependsOn`` is not modelled (the app never sends it). The request log shows the
batch and each of its requests, these with ``clientRequestId`` ``batched:<id>``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import GraphError

MAX_REQUESTS = 20
# "Microsoft Graph dispatches up to four individual requests from a batch to the Outlook service simultaneously"
# (a Microsoft answer: https://learn.microsoft.com/en-us/answers/questions/1660054/): a batch of 20 calendar
# requests takes about five of their latencies, not one.
PARALLEL = 4
BATCHED = "batched:"  # clientRequestId of a batch's requests in GET /_sandbox/requests


def _requests(body: Any) -> list[dict[str, Any]]:
    items = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise GraphError(400, "BadRequest", "Invalid batch payload format.")
    if len(items) > MAX_REQUESTS:
        raise GraphError(400, "BadRequest", f"Number of batch requests exceeds the limit of {MAX_REQUESTS}.")
    ids = [str(item.get("id", "")) if isinstance(item, dict) else "" for item in items]
    if "" in ids or len(set(ids)) != len(ids):
        raise GraphError(400, "BadRequest", "Each request of a batch needs an id, unique in the batch.")
    for item in items:
        if not isinstance(item.get("url"), str) or not isinstance(item.get("method"), str):
            raise GraphError(400, "BadRequest", "Each request of a batch needs a method and a url.")
    return items


async def _one(client: httpx.AsyncClient, item: dict[str, Any], authorization: str) -> dict[str, Any]:
    url = item["url"] if item["url"].startswith("/") else f"/{item['url']}"
    headers = {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
    headers["Authorization"] = authorization
    # The request log tells a batch's requests from requests of their own by this prefix.
    headers["client-request-id"] = f"{BATCHED}{item['id']}"
    content = json.dumps(item["body"]).encode() if "body" in item else None
    answer = await client.request(item["method"].upper(), f"/v1.0{url}", headers=headers, content=content)
    try:
        body = answer.json() if answer.content else None
    except ValueError:
        body = answer.text
    kept = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "retry-after", "location")}
    return {"id": str(item["id"]), "status": answer.status_code, "headers": kept, "body": body}


async def batch(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError as exc:
        raise GraphError(400, "BadRequest", "Invalid batch payload format.") from exc
    items = _requests(body)
    authorization = request.headers.get("authorization", "")
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url=request.app.state.sandbox.base_url) as client:
        # Without dependsOn Graph runs a batch's requests in any order, at most PARALLEL at a time for Outlook.
        lanes = asyncio.Semaphore(PARALLEL)

        async def lane(item: dict[str, Any]) -> dict[str, Any]:
            async with lanes:
                return await _one(client, item, authorization)

        responses = list(await asyncio.gather(*(lane(item) for item in items)))
    return JSONResponse({"responses": responses})


routes = [Route("/v1.0/$batch", batch, methods=["POST"])]
