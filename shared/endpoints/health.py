"""GET /api/health (anonymous) and GET /api/health/details (function key): does each dependency answer?

Tables and queues answer when a cheap read succeeds. Graph answers when its endpoint returns any HTTP
response (without a token that is a 401, which still proves it is reachable); checking Graph with a
token would spend quota on every probe. Checks run concurrently, each bounded by
HEALTH_TIMEOUT_SECONDS, so the probe itself never hangs.

Two answers from one report:

- ``/api/health`` is anonymous (uptime probes, load balancers): per dependency only its name and
  ``ok``. No detail text (exception messages name storage accounts, host names, ports) and no
  durations: a duration reveals how a check failed (exactly HEALTH_TIMEOUT_SECONDS: no answer; a few
  milliseconds: refused), which is the detail withheld, and an outside probe times its own request anyway.
- ``/api/health/details`` needs a function key (the Functions host checks it): the full report, with each
  dependency's ``durationMs`` and ``detail``.

Every probe, keyed or not, shares the round of checks running when it arrives: a flood of anonymous probes
costs the dependencies one round, not one per probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypedDict

import azure.functions as func

from shared.adapters.lazy_imports import lazy
from shared.adapters.logs import redact
from shared.adapters.monitoring import correlation_id
from shared.adapters.settings import get_settings
from shared.adapters.single_flight import SingleFlight
from shared.adapters.storage import MAILBOX_TABLE, QUEUES, get_store
from shared.contracts.errors import error_body
from shared.endpoints.http import endpoint, json_response

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy("httpx")  # only the Graph check needs it (shared.adapters.lazy_imports)


class DependencyStatus(TypedDict):
    name: str
    ok: bool
    durationMs: int
    detail: str


async def _tables() -> str:
    table = get_store().table(MAILBOX_TABLE)
    async for _ in table.query_entities("PartitionKey eq '_health'", results_per_page=1):
        break
    return f"table {MAILBOX_TABLE} readable"


async def _queues() -> str:
    store = get_store()
    for name in QUEUES:
        await store.queue(name).get_queue_properties()
    return f"{len(QUEUES)} queues readable"


async def _graph() -> str:
    url = get_settings().graph_base_url
    async with httpx.AsyncClient(timeout=get_settings().health_timeout_seconds) as client:
        response = await client.get(url)
    return f"answered HTTP {response.status_code}"


CHECKS: dict[str, Callable[[], Awaitable[str]]] = {"tables": _tables, "queues": _queues, "graph": _graph}


async def _run(name: str, check: Callable[[], Awaitable[str]], limit_seconds: float) -> DependencyStatus:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit_seconds):
            detail = await check()
        ok = True
    except TimeoutError:
        detail, ok = f"no answer within {limit_seconds:g} s", False
    except Exception as exc:  # any failure means "did not answer"; the detail says how
        detail, ok = redact(f"{type(exc).__name__}: {exc}".splitlines()[0])[:300], False
    return {"name": name, "ok": ok, "durationMs": round((time.perf_counter() - started) * 1000), "detail": detail}


async def _check_all() -> dict[str, Any]:
    timeout = get_settings().health_timeout_seconds
    results = await asyncio.gather(*(_run(name, check, timeout) for name, check in CHECKS.items()))
    healthy = all(r["ok"] for r in results)
    return {"status": "healthy" if healthy else "unhealthy", "dependencies": list(results)}


_rounds: SingleFlight[dict[str, Any]] = SingleFlight()


async def check_dependencies() -> dict[str, Any]:
    """The report; a probe arriving while a round of checks runs gets that round's result."""
    return dict(await _rounds.run("checks", _check_all))  # a copy: the caller may add to it


def public_report(report: dict[str, Any]) -> dict[str, Any]:
    """What an anonymous caller may see of ``report``: the status, and each dependency's name and ``ok``."""
    return {"status": report["status"],
            "dependencies": [{"name": d["name"], "ok": d["ok"]} for d in report["dependencies"]]}


def _answer(req: func.HttpRequest, report: dict[str, Any]) -> func.HttpResponse:
    if report["status"] == "healthy":
        return json_response(report, 200)
    failed = ", ".join(d["name"] for d in report["dependencies"] if not d["ok"])
    report |= error_body("DependencyUnavailable", correlation_id(), req.headers.get("accept-language"),
                         dependency=failed)
    return json_response(report, 503)


@endpoint
async def handle(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/health``, anonymous: healthy or not, per dependency, nothing more."""
    return _answer(req, public_report(await check_dependencies()))


@endpoint
async def handle_details(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/health/details``, behind a function key: the full report (durations, detail texts)."""
    return _answer(req, await check_dependencies())
