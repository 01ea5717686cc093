"""Error bodies exactly as Microsoft Graph and Entra ID shape them.

Graph: ``{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}``
with ``request-id``/``client-request-id`` response headers. Entra ID token endpoint: the OAuth 2.0
shape ``{"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id",
"error_uri"}`` where the description starts with the AADSTS code.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class GraphError(Exception):
    """Raised by handlers; the app turns it into Graph's error response."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def request_ids(request: Request) -> tuple[str, str]:
    """The request id we assign and the client's own id (echoed, or generated like Graph does)."""
    rid = request.scope.setdefault("sandbox.request_id", str(uuid.uuid4()))
    cid = request.headers.get("client-request-id") or request.scope.setdefault(
        "sandbox.client_request_id", str(uuid.uuid4())
    )
    return rid, cid


def graph_error(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    rid, cid = request_ids(request)
    body: dict[str, Any] = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": rid,
                "client-request-id": cid,
            },
        }
    }
    all_headers = {"request-id": rid, "client-request-id": cid, **(headers or {})}
    return JSONResponse(body, status_code=status, headers=all_headers)


def entra_error(
    status: int, error: str, aadsts: int, description: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    text = (
        f"AADSTS{aadsts}: {description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n"
        f"Timestamp: {now.strftime('%Y-%m-%d %H:%M:%SZ')}"
    )
    body = {
        "error": error,
        "error_description": text,
        "error_codes": [aadsts],
        "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={aadsts}",
    }
    return JSONResponse(
        body, status_code=status, headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})}
    )
