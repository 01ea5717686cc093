"""The operators' routes of the flow exports (``shared.services.backup``), behind the master (admin) key: they act on
every business at once, so no business's administrator may call them.

- ``GET  backups/flows``          the exports in the ``flow-backups`` container, newest first, with their counts
- ``POST backups/flows/restore``  re-create an export's flows and their subscriptions, one page of mailboxes per call

The restore's JSON body (all optional): ``export`` (a blob name from the listing; default the newest), ``dryRun``
(write nothing, say what would be done), ``after`` (the ``next`` of the previous answer), ``limit`` (mailboxes per
call, 1-200, default 50). ``scripts/restore-flows.sh`` (and ``.ps1``) calls it page by page.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func

from shared.contracts.errors import ApiError
from shared.endpoints.http import endpoint, json_object, json_response
from shared.services import backup

EXPORTS_ROUTE = "backups/flows"
RESTORE_ROUTE = "backups/flows/restore"
MAX_PAGE = 200


def _options(body: dict[str, Any]) -> tuple[str | None, bool, str, int]:
    export, dry_run, after, limit = (body.get("export"), body.get("dryRun", False), body.get("after") or "",
                                     body.get("limit", backup.DEFAULT_PAGE))
    if export is not None and not isinstance(export, str):
        raise ApiError("InvalidRequest", reason="export must be a blob name (GET /api/backups/flows lists them)")
    if not isinstance(dry_run, bool):
        raise ApiError("InvalidRequest", reason="dryRun must be true or false")
    if not isinstance(after, str):
        raise ApiError("InvalidRequest", reason="after must be the previous answer's next")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise ApiError("InvalidRequest", reason=f"limit must be a whole number from 1 to {MAX_PAGE}")
    return export or None, dry_run, after, limit


@endpoint
async def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"exports": await backup.list_exports()})


@endpoint
async def restore(req: func.HttpRequest) -> func.HttpResponse:
    body = json_object(req.get_body(), 4096) if req.get_body() else {}
    export, dry_run, after, limit = _options(body)
    report = await backup.restore_flows(export, dry_run=dry_run, after=after, limit=limit)
    return json_response(report.body())
