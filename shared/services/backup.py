"""The flow registrations' export and restore: what brings every flow back after the ``mailboxes`` table is lost.

Table storage has no point-in-time restore (Azure's covers block blobs only:
https://learn.microsoft.com/azure/storage/blobs/point-in-time-restore-overview), and the flow registrations exist
nowhere else: Power Automate keeps a flow's callback URL but registers it again only when the flow is saved or
turned off and on. So a timer (``BACKUP_SCHEDULE``, ``shared.workers.backup``) writes every flow to a new blob of the
``flow-backups`` container each day, and ``restore`` (``POST /api/backups/flows/restore``, run by
``scripts/restore-flows.sh``) puts them back through the registration's own paths.

What an export holds, per flow: mailbox, webhook id (the id in the ``Location`` Power Automate DELETEs), trigger,
callback URL, creator (object id, UPN), creation time, service and staff filters. Nothing else is needed to resume;
the rest is rebuilt:

- the quota row and the ``~index:flows`` row: written by ``FlowRegistry.restore`` as a registration writes them;
- the Graph subscription (``subscription`` row, ``subscriptions`` table): ``subscriptions.ensure``, as for a first
  flow; a subscription the lost table knew is an orphan that the renewal sweep deletes;
- the snapshots and sync state: the new subscription's baseline records what exists silently, so flows get the
  changes made from the restore on (changes made while the table was lost are not sent: nobody watched);
- delivery health counters start at 0; outbox rows and dead letters of the lost table are not in an export (events
  in flight when the table went are lost with it; dead letters stay in the outbox while it exists).

Callback URLs are secrets (their query string is the flow's signature): an export holds them because a restore
without them cannot work, in a container readable only by identities with a blob data role on the account
(docs/architecture.md, "Flow exports"). This module never logs one: its lines name blobs, mailboxes and counts.

Each exported flow is judged as a registration is (whoever may write blobs could edit an export): a mailbox
address, a webhook id this app issues, a known trigger, a callback URL the current ``CALLBACK_HOST_ALLOWLIST``
admits (``shared.adapters.callback_urls``); a refused one is listed in the answer, with the reason (its host at
most). Restore is idempotent (a flow row that exists is left alone, ``ensure`` keeps an active subscription) and paged
(``after`` + ``limit`` mailboxes per call: one HTTP call stays far inside the Functions HTTP time limit whatever the
number of mailboxes); ``dry_run`` writes nothing and says what it would do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from shared.adapters.blobs import FLOW_BACKUP_CONTAINER, get_blobs
from shared.adapters.callback_urls import CallbackPolicy, check_notification_url
from shared.adapters.monitoring import track_event
from shared.adapters.settings import get_settings
from shared.contracts import events
from shared.contracts.errors import ApiError
from shared.contracts.ncrontab import fire_times
from shared.records import flows
from shared.records.flows import TRIGGERS, Flow, FlowLimitReached, FlowRegistry
from shared.records.mailbox import ensure_index, iso, utc
from shared.services import subscriptions

log = logging.getLogger(__name__)

PREFIX = "flows-"
FORMAT = "bookings-triggers/flows"
VERSION = 1
RESTORE_CONCURRENCY = 4  # mailboxes at once: each may create a Graph subscription (paced by Graph's limits)
DEFAULT_PAGE = 50


class ExportedFlow(TypedDict):
    mailbox: str
    webhookId: str
    trigger: str
    callbackUrl: str  # secret
    createdByOid: str
    createdByUpn: str
    createdDateTime: str
    serviceIds: list[str]
    staffMemberIds: list[str]
    offsetMinutes: NotRequired[int]  # the time-relative triggers only


def _exported(flow: Flow) -> ExportedFlow:
    exported: ExportedFlow = {
        "mailbox": flow.mailbox, "webhookId": flow.webhook_id, "trigger": flow.trigger,
        "callbackUrl": flow.callback_url, "createdByOid": flow.created_by_oid,
        "createdByUpn": flow.created_by_upn, "createdDateTime": iso(flow.created),
        "serviceIds": list(flow.service_ids), "staffMemberIds": list(flow.staff_member_ids)}
    if flow.offset_minutes is not None:
        exported["offsetMinutes"] = flow.offset_minutes
    return exported


def _flow(item: ExportedFlow) -> Flow:
    return Flow(mailbox=item["mailbox"].lower(), webhook_id=item["webhookId"], trigger=item["trigger"],
                callback_url=item["callbackUrl"], created_by_oid=item.get("createdByOid", ""),
                created_by_upn=item.get("createdByUpn", ""),
                created=utc(item["createdDateTime"]) or datetime.now(UTC),
                service_ids=tuple(item.get("serviceIds") or ()),
                staff_member_ids=tuple(item.get("staffMemberIds") or ()),
                offset_minutes=item["offsetMinutes"] if isinstance(item.get("offsetMinutes"), int) else None)


def blob_name(moment: datetime) -> str:
    """One new blob per export, named by its time: sorting by name is sorting by time."""
    return f"{PREFIX}{moment.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"


@dataclass(frozen=True)
class ExportSummary:
    blob: str
    flows: int
    mailboxes: int


async def export_flows(now: datetime | None = None) -> ExportSummary:
    """Write every flow registration to a new blob; storage work: the flows index query, one query per mailbox,
    one Put Blob."""
    now = now or datetime.now(UTC)
    started = time.monotonic()
    await ensure_index(flows.INDEX, flows.backfill_index)
    every = await flows.all_flows()
    mailboxes = len({f.mailbox for f in every})
    document = {"format": FORMAT, "version": VERSION, "exportedAt": iso(now), "flowCount": len(every),
                "mailboxCount": mailboxes, "flows": [_exported(f) for f in every]}
    name = blob_name(now)
    await get_blobs().put(FLOW_BACKUP_CONTAINER, name, json.dumps(document).encode(),
                          {"flows": str(len(every)), "mailboxes": str(mailboxes), "exportedat": iso(now)})
    log.info("flow export %s: %d flows of %d mailboxes", name, len(every), mailboxes)
    # The next export's instant rides on this one: the flow-export-missing alert fires when it has passed with no
    # export since, whatever BACKUP_SCHEDULE says (the rule cannot read the schedule itself).
    upcoming = next(fire_times(get_settings().backup_schedule, now), None)
    track_event(events.FLOWS_EXPORTED, export=name, flowCount=len(every), mailboxCount=mailboxes,
                durationMs=round((time.monotonic() - started) * 1000), nextExportAt=iso(upcoming) if upcoming else "")
    return ExportSummary(name, len(every), mailboxes)


class ExportListing(TypedDict):
    blob: str
    flows: int
    mailboxes: int
    lastModified: str


async def list_exports() -> list[ExportListing]:
    """Every export in the container, newest first, with its counts (blob metadata: one List Blobs call)."""
    found = await get_blobs().list(FLOW_BACKUP_CONTAINER, PREFIX)
    return [{"blob": b.name, "flows": int(b.metadata.get("flows", "0") or 0),
             "mailboxes": int(b.metadata.get("mailboxes", "0") or 0), "lastModified": iso(b.last_modified)}
            for b in reversed(found)]


async def read_export(name: str | None) -> tuple[str, dict[str, Any]]:
    """The named export, or the newest; ``ApiError`` (404 ``FlowExportNotFound``) when there is none."""
    if not name:
        listed = await list_exports()
        if not listed:
            raise ApiError("FlowExportNotFound", export="(newest)")
        name = listed[0]["blob"]
    if not name.startswith(PREFIX) or "/" in name:
        raise ApiError("InvalidRequest", reason=f"an export is named {PREFIX}<time>.json")
    try:
        document = json.loads(await get_blobs().get(FLOW_BACKUP_CONTAINER, name))
    except FileNotFoundError:
        raise ApiError("FlowExportNotFound", export=name) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("version") != VERSION:
        raise ApiError("InvalidRequest", reason=f"{name} is not a flow export this version reads")
    return name, document


@dataclass
class RestoreReport:
    export: str
    exported_at: str
    dry_run: bool
    mailboxes: list[str] = field(default_factory=list)
    restored: int = 0  # flows written (dry run: that would be)
    present: int = 0  # flows already there: left alone
    refused: list[dict[str, str]] = field(default_factory=list)  # flows or subscriptions that could not be made
    subscriptions: int = 0  # mailboxes whose subscription is active after the call
    next_after: str | None = None  # the next call's `after`; None: this was the last page

    def body(self) -> dict[str, Any]:
        return {"export": self.export, "exportedAt": self.exported_at, "dryRun": self.dry_run,
                "mailboxes": self.mailboxes, "flowsRestored": self.restored, "flowsPresent": self.present,
                "subscriptionsActive": self.subscriptions, "refused": self.refused, "next": self.next_after}


_KEY_FORBIDDEN = set("/\\#?") | {chr(c) for c in range(0x20)}


async def _checked(item: Any, mailbox: str) -> Flow:
    """The exported flow as a ``Flow``, judged as a registration judges it (an export can be edited by whoever may
    write blobs): a mailbox address, a webhook id this app issues, a known trigger, and a callback URL the current
    ``CALLBACK_HOST_ALLOWLIST`` admits. ``ValueError`` says why not, never with the URL's query string."""
    if not isinstance(item, dict):
        raise ValueError("not a flow")
    if "@" not in mailbox or mailbox.startswith("~") or _KEY_FORBIDDEN & set(mailbox):
        raise ValueError("not a mailbox address")
    try:
        webhook_id = str(uuid.UUID(str(item.get("webhookId"))))
    except ValueError:
        raise ValueError("not a webhook id this app issues") from None
    if item.get("trigger") not in TRIGGERS:
        raise ValueError("unknown trigger")
    url = await check_notification_url(item.get("callbackUrl"), CallbackPolicy.from_settings(get_settings()))
    try:
        return _flow({**item, "mailbox": mailbox, "webhookId": webhook_id, "callbackUrl": url})
    except (KeyError, TypeError, ValueError):
        raise ValueError("a field is missing or malformed") from None


async def _restore_mailbox(mailbox: str, items: list[Any], report: RestoreReport) -> None:
    registry = FlowRegistry.default()
    kept = 0
    for item in items:
        try:
            flow = await _checked(item, mailbox)
        except ValueError as refusal:  # CallbackUrlRefused too: its reason names the host only
            webhook_id = str(item.get("webhookId", "")) if isinstance(item, dict) else ""
            report.refused.append({"mailbox": mailbox, "webhookId": webhook_id, "reason": str(refusal)})
            continue
        if report.dry_run:
            exists = await registry.get_flow(mailbox, flow.webhook_id) is not None
            report.present, report.restored = report.present + exists, report.restored + (not exists)
            continue
        try:
            restored = await registry.restore(flow)
        except FlowLimitReached as refusal:
            report.refused.append({"mailbox": mailbox, "webhookId": flow.webhook_id, "reason": str(refusal)})
            continue
        report.restored, report.present, kept = report.restored + restored, report.present + (not restored), kept + 1
    if report.dry_run or not kept:
        return
    try:
        await subscriptions.ensure(mailbox)
        report.subscriptions += 1
    except ApiError as error:
        # The flows stay: the renewal sweep's repair makes the subscription later (RENEWAL_SCHEDULE).
        report.refused.append({"mailbox": mailbox, "webhookId": "", "reason": f"subscription: {error.code}"})
        log.warning("restore: no subscription for %s yet (%s); the renewal sweep will make it", mailbox, error.code,
                    extra={"mailbox": mailbox})


async def restore_flows(export: str | None = None, *, dry_run: bool = False, after: str = "",
                        limit: int = DEFAULT_PAGE) -> RestoreReport:
    """Re-create the export's flows of up to ``limit`` mailboxes after ``after`` (by address), and their
    subscriptions. Idempotent; ``dry_run`` writes nothing."""
    name, document = await read_export(export)
    by_mailbox: dict[str, list[Any]] = {}
    for item in document.get("flows") or []:
        by_mailbox.setdefault(str(item.get("mailbox", "") if isinstance(item, dict) else "").lower(), []).append(item)
    pending = [m for m in sorted(by_mailbox) if m > after.lower()]
    page = pending[:limit]
    report = RestoreReport(name, str(document.get("exportedAt", "")), dry_run, page,
                           next_after=page[-1] if len(pending) > limit else None)
    gate = asyncio.Semaphore(RESTORE_CONCURRENCY)

    async def one(mailbox: str) -> None:
        async with gate:
            await _restore_mailbox(mailbox, by_mailbox[mailbox], report)

    await asyncio.gather(*(one(m) for m in page))
    log.info("restore from %s%s: %d mailboxes, %d flows restored, %d present, %d refused", name,
             " (dry run)" if dry_run else "", len(page), report.restored, report.present, len(report.refused))
    return report
