"""Wiring only: one small function per trigger, each delegating to a module of the ``shared`` package.

A standard Python v2 programming-model app: ``func start`` and Azure run it unchanged, and so does the
project's local host (``python -m devhost``). Importing it must stay cheap (no Graph SDK here).
"""

import azure.functions as func

from shared import health
from shared.settings import get_settings
from shared.telemetry import configure_logging

# Read every setting now: a bad one stops the app at start-up with a message naming it.
configure_logging(get_settings().log_level)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health_check(req: func.HttpRequest) -> func.HttpResponse:
    return await health.handle(req)
