"""HTTP plumbing shared by every HTTP function: JSON answers, correlation ids, error conversion.

``endpoint`` wraps an async handler so that an ``ApiError`` becomes its catalogued JSON answer and
anything unexpected becomes a 500 ``InternalError`` whose correlation id is also in the log line, so a
flow maker's support request can be matched to the trace. The Azure runtime would answer an unhandled
exception with a bare 500; this keeps the promise that every non-2xx answer has a JSON error body.

The correlation id of the request is set here, once (``shared.adapters.monitoring.correlation_id()``
reads it anywhere below), and every answer carries it in ``x-correlation-id``.

Every answer, whatever its status, is recorded here too (``monitoring.request_span``): a ``requests`` row with
the status and how long the answer took, named by the route template (``GET /api/v1/bookingBusinesses/{id}``,
never the values) and with the URL's query left out. A 503 is an ordinary answer to the Functions host (the
execution succeeded), so the host's own request telemetry never shows it; this does.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import azure.functions as func

from shared.adapters.logs import redact_url
from shared.adapters.monitoring import correlation_id, new_correlation_id, request_span, telemetry_context
from shared.contracts.errors import ApiError, error_body

log = logging.getLogger(__name__)

CORRELATION_HEADER = "x-correlation-id"

Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    all_headers = dict(headers or {})
    if correlation_id():
        all_headers[CORRELATION_HEADER] = correlation_id()
    return func.HttpResponse(json.dumps(body, ensure_ascii=False), status_code=status, headers=all_headers,
                             mimetype="application/json", charset="utf-8")


def empty_response(status: int) -> func.HttpResponse:
    """An answer without a body (204, 202), with the request's correlation id."""
    return func.HttpResponse(status_code=status, headers={CORRELATION_HEADER: correlation_id()})


def error_response(error: ApiError, accept_language: str | None) -> func.HttpResponse:
    body = error_body(error.code, correlation_id(), accept_language, **error.details)
    return json_response(body, error.status, error.headers)


def json_object(body: bytes, limit: int) -> dict[str, Any]:
    """A request body that must be one JSON object of at most ``limit`` bytes: ``PayloadTooLarge`` or
    ``InvalidRequest`` (saying which) otherwise."""
    if len(body) > limit:
        raise ApiError("PayloadTooLarge", limit=limit)
    try:
        document = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError("InvalidRequest", reason="the body is not JSON") from None
    except RecursionError:  # json.loads recurses once per level of nesting: "[[[[…" deep enough overflows it
        raise ApiError("InvalidRequest", reason="the body's JSON is nested too deeply") from None
    if not isinstance(document, dict):
        raise ApiError("InvalidRequest", reason="the body must be a JSON object")
    return document


# Control characters (Unicode's Cc: C0, DEL, C1) and surrogates, which in a str are always lone ones.
_LINE_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_MULTILINE_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def page_size(raw: str | None, default: int, maximum: int) -> int:
    """A listing's ``top`` query parameter: ``default`` when absent, else a whole number from 1 to ``maximum``."""
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= maximum):
        raise ApiError("InvalidRequest", reason=f"top must be a whole number from 1 to {maximum}")
    return int(raw)


def text_field(value: Any, name: str, limit: int, *, multiline: bool = False) -> str:
    """A text field of a request body, stripped: a string of at most ``limit`` characters with no lone surrogate
    (JSON's ``"\\ud800"``, which no store or Graph can encode) and no control character (line breaks and tabs
    only where ``multiline``); ``InvalidRequest`` naming the field otherwise."""
    if not isinstance(value, str) or len(value) > limit:
        raise ApiError("InvalidRequest", reason=f"{name} must be text of at most {limit} characters")
    if (_MULTILINE_REFUSED if multiline else _LINE_REFUSED).search(value):
        raise ApiError("InvalidRequest", reason=f"{name} holds a control character or a lone surrogate")
    return value.strip()


async def by_method(req: func.HttpRequest, handlers: dict[str, Handler]) -> func.HttpResponse:
    """One route template, several methods: the handler of the request's method, else 405 ``MethodNotAllowed``
    naming the allowed ones (so no router has to choose between two templates of the same shape)."""
    method = req.method.upper()
    handler = handlers.get(method)
    if handler is None:
        raise ApiError("MethodNotAllowed", method=method, path=urlsplit(req.url).path, allowed=", ".join(handlers))
    return await handler(req)


def route_template(req: func.HttpRequest) -> str:
    """The request's path with its route parameters' values replaced by their names: what the app serves."""
    path = urlsplit(req.url).path or "/"
    names = {value: name for name, value in (req.route_params or {}).items() if value}
    if not names:  # a route without parameters (the Graph endpoints): the path is the template
        return path
    return "/".join(f"{{{names[unquote(part)]}}}" if unquote(part) in names else part for part in path.split("/"))


def endpoint(handler: Handler) -> Handler:
    """Give ``handler(req)`` a correlation id, the JSON error contract and its ``requests`` row."""

    @functools.wraps(handler)
    async def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        accept_language = req.headers.get("accept-language")
        with request_span(req.method, route_template(req), redact_url(req.url)) as answer, \
                telemetry_context(correlationId=new_correlation_id()):
            answer.correlation_id = correlation_id()
            try:
                response = await handler(req)
            except ApiError as error:
                log.info("%s answered %s %s", handler.__name__, error.status, error.code,
                         extra={"correlationId": correlation_id(), "errorCode": error.code})
                response = error_response(error, accept_language)
            except Exception:
                log.exception("%s failed", handler.__name__,
                              extra={"correlationId": correlation_id(), "errorCode": "InternalError"})
                response = error_response(ApiError("InternalError"), accept_language)
            answer.status = response.status_code
            return response

    return wrapper
