"""OData conventions Graph applies to collections: ``@odata.context``, server-driven paging with
``@odata.nextLink`` (``$top`` sets the page size, the link carries an opaque ``$skiptoken``; ``$skip``
is accepted too), and the ``Prefer: include-unknown-enum-members`` opt-in for evolvable enums.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request

from .errors import GraphError


def base_url(request: Request) -> str:
    return request.app.state.sandbox.base_url


def context(request: Request, fragment: str, service: str = "") -> str:
    """``{base}/v1.0/{service}$metadata#{fragment}``, e.g. service ``solutions/``."""
    return f"{base_url(request)}/v1.0/{service}$metadata#{fragment}"


def _int_option(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise GraphError(400, "BadRequest", f"Invalid value '{raw}' for query option '{name}'.")
    return int(raw)


def _decode_skiptoken(token: str) -> int:
    try:
        offset = int(base64.urlsafe_b64decode(token.encode() + b"==").decode().removeprefix("offset:"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise GraphError(400, "BadRequest", "The $skiptoken is not valid.") from exc
    if offset < 0:
        raise GraphError(400, "BadRequest", "The $skiptoken is not valid.")
    return offset


def page(
    request: Request, items: list[dict[str, Any]], context_url: str, default_size: int | None = None
) -> dict[str, Any]:
    """One page of ``items`` as a Graph collection body."""
    size = _int_option(request, "$top") or default_size or request.app.state.sandbox.config.default_page_size
    size = max(1, size)
    offset = _int_option(request, "$skip") or 0
    token = request.query_params.get("$skiptoken")
    if token:
        offset = _decode_skiptoken(token)
    chunk = items[offset : offset + size]
    body: dict[str, Any] = {"@odata.context": context_url}
    if request.query_params.get("$count", "").lower() == "true":
        body["@odata.count"] = len(items)
    body["value"] = chunk
    if offset + size < len(items):
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("$skip", "$skiptoken", "$top")]
        params.append(("$top", str(size)))
        params.append(("$skiptoken", base64.urlsafe_b64encode(f"offset:{offset + size}".encode()).decode().rstrip("=")))
        query = urlencode(params, safe="$")  # Graph writes $top/$skiptoken unescaped
        # The path percent-encoded (once) as Graph writes links: a business address like a+b@x stays a+b@x.
        body["@odata.nextLink"] = f"{base_url(request)}{quote(request.scope['path'], safe='/')}?{query}"
    return body


def wants_unknown_enum_members(request: Request) -> bool:
    prefer = ",".join(request.headers.getlist("prefer"))
    return any(p.strip().lower() == "include-unknown-enum-members" for p in prefer.split(","))
