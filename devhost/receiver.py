"""A stand-in for Power Automate in the local demo: receives flow callbacks and prints them.

``python -m devhost.receiver [--port 7073]`` serves ``POST /flows/{name}`` on 127.0.0.1, answers 202
(as a Power Automate trigger URL does), prints each AppointmentData it receives with the trigger and
idempotency key headers, and keeps them for ``GET /received`` (JSON) so scripts and tests can look.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

received: list[dict[str, Any]] = []


async def flow(request: Request) -> Response:
    try:
        payload = await request.json()
    except ValueError:
        return JSONResponse({"error": {"code": "InvalidRequest", "message": "not JSON", "remedy": "send JSON",
                                       "correlationId": ""}}, status_code=400)
    entry = {"at": datetime.now(UTC).isoformat(), "flow": request.path_params["name"],
             "trigger": request.headers.get("x-bookings-trigger"),
             "idempotencyKey": request.headers.get("idempotency-key"), "payload": payload}
    received.append(entry)
    print(f"\n=== {entry['trigger']} → flow {entry['flow']} (key {entry['idempotencyKey']}) ===\n"
          f"{json.dumps(payload, indent=2, ensure_ascii=False)}", flush=True)
    return Response(status_code=202)


async def list_received(request: Request) -> Response:
    return JSONResponse({"value": received})


app = Starlette(routes=[Route("/flows/{name}", flow, methods=["POST"]),
                        Route("/received", list_received, methods=["GET"])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7073)
    args = parser.parse_args(argv)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
