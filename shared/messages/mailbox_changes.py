"""The ``mailbox-changes`` queue: "something changed in this mailbox" hints for the reconcile worker.

Message (base64 JSON)::

    {
      "version": 1,
      "mailbox": "clinic@contoso.test",         # lower-cased SMTP address = the table partition
      "subscriptionId": "…",                    # which subscription reported it ("" for timer/lifecycle)
      "changes": [                               # the hint: may be empty, duplicated or out of order
        {"changeType": "created|updated|deleted", "eventId": "…"}   # calendar event id, NOT appointment id
      ],
      "fullResync": false,                       # true: compare the whole horizon, not just these events
      "baseline": false,                         # true: first sync of a new subscription, emit no events
      "reason": "notification|missed|subscriptionRemoved|created|timer|cancelled|repair|delta",
      "receivedAt": "2026-11-25T08:00:00+00:00",
      "correlationId": "…",
      "attempt": 0,                              # optional: how often Graph throttling sent it back already
      "poisonings": 0                            # optional: how often its hints went to the poison queue
    }

The reconcile worker treats it as a hint: it re-reads Graph and diffs against its snapshot, so
duplicates, re-orderings and lost messages cannot produce wrong events.

Under a burst the notification endpoint (``shared.endpoints.hint_batching``) and the resync timer also
write *bundles*: several mailboxes' messages in one queue message, which the reconcile worker first splits
into the messages above, one queue message each (``split_bundle``)::

    {"version": 1, "bundle": [<message as above>, …]}      # never more than MAX_MESSAGE_JSON_BYTES of JSON

This module is the one packer of bundles (``bundle_groups``, ``bundle``, ``packed``) and the one reader of
their members (``bundle_messages``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import NotRequired, TypedDict, TypeGuard, TypeVar

from shared.adapters.monitoring import correlation_id
from shared.adapters.storage import MAILBOX_CHANGES_QUEUE, get_store

MAX_MESSAGE_JSON_BYTES = 46 * 1024  # a queue message holds 64 KiB of base64 = 48 KiB of JSON, less a margin
_EMPTY_BUNDLE_JSON_BYTES = len('{"version": 1, "bundle": []}')

T = TypeVar("T")


class Change(TypedDict):
    changeType: str
    eventId: str


class MailboxChangeMessage(TypedDict):
    version: int
    mailbox: str
    subscriptionId: str
    changes: list[Change]
    fullResync: bool
    baseline: bool
    reason: str
    receivedAt: str
    correlationId: str
    attempt: NotRequired[int]
    poisonings: NotRequired[int]  # shared.workers.poison


class HintBundle(TypedDict):
    version: int
    bundle: list[MailboxChangeMessage]


def change_message(mailbox: str, *, subscription_id: str = "", changes: list[Change] | None = None,
                   full_resync: bool = False, baseline: bool = False, reason: str,
                   received_at: datetime | None = None) -> MailboxChangeMessage:
    """A hint received now (or at ``received_at``: when the change it names was made, as the delta check knows
    it, so that a reconcile that began after it counts it covered), in the current correlation id."""
    return {"version": 1, "mailbox": mailbox, "subscriptionId": subscription_id, "changes": changes or [],
            "fullResync": full_resync, "baseline": baseline, "reason": reason,
            "receivedAt": (received_at or datetime.now(UTC)).isoformat(), "correlationId": correlation_id()}


def full_resync(mailbox: str, reason: str, subscription_id: str = "") -> MailboxChangeMessage:
    """A hint that names no event: compare the mailbox's whole horizon."""
    return change_message(mailbox, subscription_id=subscription_id, full_resync=True, reason=reason)


async def enqueue(message: MailboxChangeMessage | HintBundle, delay_seconds: int = 0) -> None:
    await get_store().queue(MAILBOX_CHANGES_QUEUE).send_message(json.dumps(message),
                                                                visibility_timeout=delay_seconds or None)


def json_bytes(value: object) -> int:
    """The length of ``value``'s JSON as ``enqueue`` writes it."""
    return len(json.dumps(value))


def change_json_bytes(change: Change) -> int:
    """Bytes ``change`` adds to a message's JSON (with the ", " before it), without serialising it when it
    needs no escaping: a burst counts every change of every hint."""
    text = change["changeType"] + change["eventId"]
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text) + 34  # {"changeType": "…", "eventId": "…"} and the ", " before it
    return json_bytes(change) + 2


def bundle_groups(items: Iterable[T], message_bytes: Callable[[T], int]) -> list[list[T]]:
    """``items`` (messages, or what stands for them) in order, in groups whose bundle holds at most
    ``MAX_MESSAGE_JSON_BYTES`` of JSON; ``message_bytes(item)`` is the length of the item's message JSON."""
    groups: list[list[T]] = []
    size = 0
    for item in items:
        length = message_bytes(item) + 2  # and the ", " before it
        if not groups or size + length > MAX_MESSAGE_JSON_BYTES:
            groups.append([])
            size = _EMPTY_BUNDLE_JSON_BYTES
        groups[-1].append(item)
        size += length
    return groups


def bundle(messages: list[MailboxChangeMessage]) -> HintBundle:
    """One queue message holding ``messages`` (a group of ``bundle_groups``)."""
    return {"version": 1, "bundle": messages}


def packed(messages: list[MailboxChangeMessage]) -> list[MailboxChangeMessage | HintBundle]:
    """``messages`` in as few queue messages as fit: bundles of at most ``MAX_MESSAGE_JSON_BYTES`` of JSON, a
    message alone as itself."""
    return [group[0] if len(group) == 1 else bundle(group) for group in bundle_groups(messages, json_bytes)]


def is_bundle(message: object) -> TypeGuard[HintBundle]:
    return isinstance(message, dict) and isinstance(message.get("bundle"), list)


def bundle_messages(bundle: HintBundle) -> list[MailboxChangeMessage]:
    """The bundle's members that are messages (with a mailbox); anything else in it is skipped."""
    return [m for m in bundle["bundle"] if isinstance(m, dict) and isinstance(m.get("mailbox"), str)]


def parse(body: bytes) -> MailboxChangeMessage | HintBundle:
    """The message or bundle in ``body``; ValueError when it is neither (retrying cannot fix that)."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(str(error)) from None
    if not is_bundle(message) and not (isinstance(message, dict) and isinstance(message.get("mailbox"), str)):
        raise ValueError("no mailbox")
    return message  # type: ignore[no-any-return]


def received_at(message: MailboxChangeMessage) -> datetime:
    try:
        return datetime.fromisoformat(message["receivedAt"])
    except (KeyError, ValueError, TypeError):
        return datetime.now(UTC)


async def split_bundle(bundle: HintBundle) -> int:
    """The reconcile worker's first step for a bundle: its per-mailbox messages, each queued on its own.

    If a write fails the bundle is retried whole; the messages already written come again, which is
    harmless (hints are idempotent)."""
    messages = bundle_messages(bundle)
    await asyncio.gather(*(enqueue(m) for m in messages))
    return len(messages)
