"""POST /api/graph/lifecycle: Graph's lifecycle notifications for our subscriptions.

Same handshake and clientState check as change notifications (``shared.notifications``), and the same
rule: answer fast, work later. Each authentic item becomes a task on ``subscription-tasks``:

==========================  ==========================================================================
lifecycleEvent              task
==========================  ==========================================================================
reauthorizationRequired     ``reauthorize`` the subscription (renew it when reauthorizing fails)
subscriptionRemoved         ``recreate`` it, then a full resync of the mailbox (changes may be missed)
missed                      a full resync of the mailbox (put straight on ``mailbox-changes``)
==========================  ==========================================================================

Task contract (queue ``subscription-tasks``, base64 JSON)::

    {"version": 1, "action": "reauthorize|recreate|renew|repair", "mailbox": "…",
     "subscriptionId": "…", "reason": "…", "correlationId": "…"}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from typing import Any, TypedDict

import azure.functions as func

from shared.notifications import Accepted, change_message, enqueue_change, receive
from shared.store import SUBSCRIPTION_TASKS_QUEUE, get_store
from shared.web import endpoint

log = logging.getLogger(__name__)


class SubscriptionTask(TypedDict):
    version: int
    action: str
    mailbox: str
    subscriptionId: str
    reason: str
    correlationId: str


def task(action: str, mailbox: str, subscription_id: str, reason: str, correlation_id: str) -> SubscriptionTask:
    return {"version": 1, "action": action, "mailbox": mailbox, "subscriptionId": subscription_id,
            "reason": reason, "correlationId": correlation_id}


async def enqueue_task(item: SubscriptionTask, delay_seconds: int = 0) -> None:
    await get_store().queue(SUBSCRIPTION_TASKS_QUEUE).send_message(json.dumps(item),
                                                                 visibility_timeout=delay_seconds or None)


def _work_for(entry: Any, item: dict[str, Any], correlation_id: str) -> list[Any]:
    event = item.get("lifecycleEvent")
    mailbox, sid = entry.mailbox, entry.subscription_id
    if event == "reauthorizationRequired":
        return [enqueue_task(task("reauthorize", mailbox, sid, event, correlation_id))]
    if event == "subscriptionRemoved":
        return [enqueue_task(task("recreate", mailbox, sid, event, correlation_id))]
    if event == "missed":
        return [enqueue_change(change_message(mailbox, subscription_id=sid, full_resync=True, reason="missed",
                                              correlation_id=correlation_id))]
    log.warning("unknown lifecycle event ignored", extra={"mailbox": mailbox, "subscriptionId": sid})
    return []


@endpoint
async def handle(req: func.HttpRequest, correlation_id: str) -> func.HttpResponse:
    def persist(accepted: Accepted, dropped_count: int) -> list[Awaitable[Any]]:
        for entry, item in accepted:
            log.info("lifecycle %s for %s", item.get("lifecycleEvent"), entry.mailbox,
                     extra={"mailbox": entry.mailbox, "subscriptionId": entry.subscription_id,
                            "correlationId": correlation_id})
        return [work for entry, item in accepted for work in _work_for(entry, item, correlation_id)]

    return await receive(req, correlation_id, "lifecycle notifications", persist)
