"""POST /api/graph/lifecycle: Graph's lifecycle notifications for our subscriptions.

Same handshake and clientState check as change notifications (``shared.endpoints.graph_requests``), and
the same rule: answer fast, work later. Each authentic item becomes queued work:

==========================  ==========================================================================
lifecycleEvent              work
==========================  ==========================================================================
reauthorizationRequired     a ``reauthorize`` task on ``subscription-tasks`` (renew it when reauthorizing
                            fails)
subscriptionRemoved         a ``recreate`` task, then a full resync of the mailbox (changes may be missed)
missed                      a full resync of the mailbox (straight on ``mailbox-changes``)
==========================  ==========================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import azure.functions as func

from shared.adapters.monitoring import track_event
from shared.contracts import events
from shared.endpoints.graph_requests import persisted, read_batch
from shared.endpoints.http import endpoint
from shared.messages import mailbox_changes
from shared.messages.subscription_tasks import enqueue_task, task
from shared.records.subscription_index import IndexEntry

log = logging.getLogger(__name__)

_KNOWN_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


def _work_for(entry: IndexEntry, item: dict[str, Any]) -> list[Awaitable[None]]:
    event = item.get("lifecycleEvent")
    mailbox, sid = entry.mailbox, entry.subscription_id
    if event not in _KNOWN_EVENTS:  # whatever it holds (nesting, surrogates) is neither logged nor kept
        log.warning("unknown lifecycle event ignored", extra={"mailbox": mailbox, "subscriptionId": sid})
        return []
    track_event(events.SUBSCRIPTION_LIFECYCLE, mailbox=mailbox, subscriptionId=sid, lifecycleEvent=event)
    if event == "reauthorizationRequired":
        return [enqueue_task(task("reauthorize", mailbox, sid, event))]
    if event == "subscriptionRemoved":
        return [enqueue_task(task("recreate", mailbox, sid, event))]
    return [mailbox_changes.enqueue(mailbox_changes.full_resync(mailbox, "missed", sid))]  # "missed"


@endpoint
async def handle(req: func.HttpRequest) -> func.HttpResponse:
    batch = await read_batch(req, "lifecycle notifications")
    if batch.handshake is not None:
        return batch.handshake
    return await persisted((work for entry, item in batch.accepted for work in _work_for(entry, item)),
                           "lifecycle notifications")
