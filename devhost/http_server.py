"""Serving HTTP functions at ``/<routePrefix>/<route>`` as the Functions runtime does.

An ASGI application (run by uvicorn) that matches the path against every HTTP function's route
template, checks the method and the auth level, builds ``func.HttpRequest`` and turns the returned
``func.HttpResponse`` into the answer. A request no function route takes (no such path, or a method the
function does not accept), one without a valid key, a body over the size limit and a function that
raised get the runtime's own bare answers (404, 401, 413, 500 with an empty body), never the app's JSON
errors (see ``_host_answer``): the app's error contract is the app's own business (shared.endpoints.http).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import azure.functions as func

from devhost.config import Keys
from devhost.functions import HttpFunction, invoke

MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions runtime's request size limit

# What the Functions host (v4) answers by itself, before any function code runs, checked against its sources:
# - Each HTTP function is mapped as an ASP.NET route whose constraints include the function's methods
#   (HttpMethodRouteConstraint in azure-functions-host src/WebJobs.Script.WebHost/
#   WebScriptHostHttpRoutesManager.cs). A path no route matches, and a path whose only matching routes
#   exclude the method, both fall through to ASP.NET's 404 with an empty body: "HTTP/1.1 404 Not Found,
#   Content-Length: 0" for DELETE on a get/post route (Azure/azure-functions-host#10098, 2024, still open:
#   asks for 405); HEAD on a GET-only route is a 404 from the routing layer (Azure/azure-functions-host#11625,
#   2026). No v4 source found answers 405, so wrong method is 404 here, without an Allow header.
# - A matched function whose key is missing or wrong gets `return new UnauthorizedResult()` (401, no body)
#   from FunctionInvocationMiddleware.GetResultAsync (src/WebJobs.Script.WebHost/Middleware/
#   FunctionInvocationMiddleware.cs), after routing and before the function is invoked; App Insights logs
#   it as "Executing StatusCodeResult, setting HTTP status code 401" (Azure/azure-functions-dotnet-worker#1249).
# - A function that raised: ExceptionMiddleware answers 500 with no body; a body over the limit: Kestrel's 413.
NOT_FOUND = 404
UNAUTHORIZED = 401
PAYLOAD_TOO_LARGE = 413
INTERNAL_ERROR = 500

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class HttpHost:
    def __init__(self, functions: list[HttpFunction], route_prefix: str, keys: Keys,
                 timeout: float | None = None) -> None:
        # Most specific template first, as ASP.NET routing orders them.
        self.functions = sorted(functions, key=lambda f: f.template.specificity)
        self.prefix = [p for p in route_prefix.strip("/").split("/") if p]
        self.keys = keys
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            return
        if scope["type"] != "http":
            return
        headers = _headers(scope)
        method = scope["method"].upper()
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0]
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))

        function, route_params = self._route(method, path)
        if function is None:
            await _host_answer(send, NOT_FOUND)
            return
        if not self._authorized(function, headers, params):
            await _host_answer(send, UNAUTHORIZED)
            return
        body = await _read_body(receive, headers)
        if body is None:
            await _host_answer(send, PAYLOAD_TOO_LARGE)  # Kestrel's own 413, before any function runs
            return
        host = headers.get("host", "127.0.0.1")
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{scope.get('scheme', 'http')}://{host}{path}" + (f"?{query}" if query else "")
        request = func.HttpRequest(method, url, headers=headers, params=params, route_params=route_params,
                                   body=body)
        outcome = await invoke(function, request, f"{method} {path}", self.timeout)
        response = outcome.result
        if not outcome.succeeded:
            await _host_answer(send, INTERNAL_ERROR)  # the host's bare 500 for a function that raised
            return
        if isinstance(response, str | bytes):
            response = func.HttpResponse(response)
        elif response is None:
            response = func.HttpResponse(status_code=204)
        elif not isinstance(response, func.HttpResponse):
            await _host_answer(send, INTERNAL_ERROR)
            return
        await _send(send, response.status_code, _response_headers(response), response.get_body())

    def _route(self, method: str, path: str) -> tuple[HttpFunction | None, dict[str, str]]:
        parts = [p for p in path.split("/") if p]
        if [p.lower() for p in parts[: len(self.prefix)]] != [p.lower() for p in self.prefix]:
            return None, {}
        rest = "/".join(parts[len(self.prefix):])
        for function in self.functions:
            # The method is one of the route's constraints, as on Azure: a route that matches the path but
            # not the method is skipped like one that does not match at all.
            if function.methods is not None and method not in function.methods:
                continue
            values = function.template.match(rest)
            if values is not None:
                return function, values
        return None, {}

    def _authorized(self, function: HttpFunction, headers: dict[str, str], params: dict[str, str]) -> bool:
        if function.auth_level == "anonymous":
            return True
        given = headers.get("x-functions-key") or params.get("code") or ""
        accepted = [self.keys.master_key]
        if function.auth_level == "function":
            accepted.append(self.keys.function_key)
        return any(hmac.compare_digest(given.encode(), key.encode()) for key in accepted)


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def _read_body(receive: Receive, headers: dict[str, str]) -> bytes | None:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _response_headers(response: func.HttpResponse) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in response.headers.items()]
    if not any(k.lower() == "content-type" for k, _ in headers):
        mimetype = response.mimetype
        textual = mimetype.startswith("text/") or mimetype in ("application/json", "application/xml")
        headers.append(("content-type", f"{mimetype}; charset={response.charset}" if textual else mimetype))
    return headers


async def _send(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers
               if k.lower() != "content-length"]
    encoded.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": encoded})
    await send({"type": "http.response.body", "body": body})


async def _host_answer(send: Send, status: int) -> None:
    """The runtime's bare answer: the status, no body, no content type, no correlation id."""
    await _send(send, status, [], b"")
