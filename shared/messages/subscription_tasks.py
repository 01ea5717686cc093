"""The ``subscription-tasks`` queue: work on one mailbox's Graph subscription, done by the renewal worker.

Renewals, reauthorizations and re-creations are fanned out as tasks so that no single invocation holds
them all. Message (base64 JSON), one task or several (the renewal sweep packs up to 50 in one message)::

    {"version": 1, "action": "renew|reauthorize|recreate|repair", "mailbox": "…", "subscriptionId": "…",
     "reason": "…", "correlationId": "…", "attempt": 0, "poisonings": 0}     # one task (poisonings:
                                                                              # shared.workers.poison)
    {"version": 1, "tasks": [<task as above>, …]}                             # several
"""

from __future__ import annotations

import json
import logging
from typing import Any, NotRequired, TypedDict

from shared.adapters.monitoring import correlation_id
from shared.adapters.storage import SUBSCRIPTION_TASKS_QUEUE, get_store

log = logging.getLogger(__name__)

ACTIONS = ("renew", "reauthorize", "recreate", "repair")


class SubscriptionTask(TypedDict):
    version: int
    action: str
    mailbox: str
    subscriptionId: str
    reason: str
    correlationId: str
    attempt: NotRequired[int]
    poisonings: NotRequired[int]


def task(action: str, mailbox: str, subscription_id: str, reason: str) -> SubscriptionTask:
    """A task, in the current correlation id."""
    return {"version": 1, "action": action, "mailbox": mailbox, "subscriptionId": subscription_id,
            "reason": reason, "correlationId": correlation_id()}


async def enqueue_task(item: SubscriptionTask, delay_seconds: int = 0) -> None:
    await get_store().queue(SUBSCRIPTION_TASKS_QUEUE).send_message(json.dumps(item),
                                                                 visibility_timeout=delay_seconds or None)


async def enqueue_tasks(items: list[SubscriptionTask], delay_seconds: int = 0) -> None:
    """Several tasks in one message (one task is sent as itself)."""
    if len(items) == 1:
        await enqueue_task(items[0], delay_seconds)
        return
    await get_store().queue(SUBSCRIPTION_TASKS_QUEUE).send_message(
        json.dumps({"version": 1, "tasks": items}), visibility_timeout=delay_seconds or None)


def parse_message(body: bytes) -> list[SubscriptionTask]:
    """The tasks of one message (one, or the sweep's several); ValueError when it holds none."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("subscription task is not JSON") from None
    if isinstance(message, dict) and isinstance(message.get("tasks"), list):
        items = []
        for raw in message["tasks"]:
            try:
                items.append(parse_task(raw))
            except ValueError as error:  # the others in the message still run
                log.error("dropped a malformed subscription task: %s", error)
        return items
    return [parse_task(message)]


def parse_task(item: Any) -> SubscriptionTask:
    if not isinstance(item, dict) or item.get("action") not in ACTIONS \
            or not isinstance(item.get("mailbox"), str) or not item["mailbox"]:
        raise ValueError("subscription task has no valid action/mailbox")
    item.setdefault("subscriptionId", "")
    item.setdefault("reason", "")
    item.setdefault("correlationId", "")
    item.setdefault("attempt", 0)
    return item  # type: ignore[return-value]
