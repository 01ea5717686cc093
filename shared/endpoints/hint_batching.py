"""Group commit of change hints: how the notification endpoint writes ``mailbox-changes`` messages.

Writing one queue message per POST and mailbox makes a burst cost one
storage write per request, and the last request of the burst waits for all of them. Instead the hints
of concurrent requests are written in waves: a wave gathers the hints that arrive while it lingers (see
``_HintBatcher._collect``), and at most ``WAVES_IN_FLIGHT`` waves are being written at once; while that
many are, the next wave goes on gathering. Every request still answers only once its hint is stored (or
503), so nothing is acknowledged before it is persisted.

A wave merges hints per mailbox. When it spans few mailboxes it writes one message per mailbox; when
it spans many (a burst), it writes *bundles* — several mailboxes' messages in one queue message — and
the reconcile worker splits each bundle into per-mailbox messages (``split_bundle``) before any
reconcile. A burst of 200 POSTs over 50 mailboxes thus costs a handful of writes instead of ~100.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import defaultdict
from typing import Any

from shared.adapters.monitoring import track_event
from shared.contracts import events
from shared.messages.mailbox_changes import MAX_MESSAGE_JSON_BYTES, Change, MailboxChangeMessage, enqueue

BUNDLE_ABOVE_MAILBOXES = 4  # up to this many mailboxes in a wave: direct messages, no extra queue hop
LINGER_SECONDS = 0.02  # the longest a wave waits for more hints of a burst (see _HintBatcher._linger)
# Two, not one: the first wave of a burst often leaves after a couple of requests (they came before the
# rest were parsed), and with one at a time the whole burst would wait behind that small write. Not more:
# under sustained load, hints gather into bigger waves instead of making more writes.
WAVES_IN_FLIGHT = 2


def _json_size(value: object) -> int:
    return len(json.dumps(value))


def _change_size(change: Change) -> int:
    """Bytes the change adds to a message's JSON, without serialising it (this runs for every item)."""
    text = change["changeType"] + change["eventId"]
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text) + 34  # {"changeType": "…", "eventId": "…"} and the ", " before it
    return _json_size(change) + 2


class _Pending:
    """One queue message being assembled, and the requests waiting for it."""

    def __init__(self, body: dict[str, Any], size: int, futures: list[asyncio.Future[None]]) -> None:
        self.body, self.size, self.futures = body, size, futures
        self.members: list[_Pending] = []  # for a bundle: the mailbox messages in it


def _pack(batch: list[tuple[MailboxChangeMessage, asyncio.Future[None]]]) -> list[_Pending]:
    """A wave's queue messages: hints merged per mailbox (each under the size limit), bundled if many."""
    per_mailbox: dict[str, list[_Pending]] = defaultdict(list)
    for message, future in batch:
        size = sum(_change_size(c) for c in message["changes"])
        groups = per_mailbox[message["mailbox"]]
        last = groups[-1] if groups else None
        if last is not None and last.size + size <= MAX_MESSAGE_JSON_BYTES:
            last.body["changes"].extend(message["changes"])
            last.body["fullResync"] = last.body["fullResync"] or message["fullResync"]
            last.size += size
            last.futures.append(future)
        else:
            body = {**message, "changes": list(message["changes"])}
            groups.append(_Pending(body, _json_size({**body, "changes": []}) + size, [future]))
    messages = [m for groups in per_mailbox.values() for m in groups]
    if len(per_mailbox) <= BUNDLE_ABOVE_MAILBOXES:
        return messages
    bundles: list[_Pending] = []
    for m in messages:
        if not bundles or bundles[-1].size + m.size + 2 > MAX_MESSAGE_JSON_BYTES:
            bundles.append(_Pending({"version": 1, "bundle": []}, len('{"version": 1, "bundle": []}'), []))
        bundle = bundles[-1]
        bundle.body["bundle"].append(m.body)
        bundle.size += m.size + 2
        bundle.futures.extend(m.futures)
        bundle.members.append(m)
    return bundles


class _HintBatcher:
    def __init__(self) -> None:
        self.waiting: list[tuple[MailboxChangeMessage, asyncio.Future[None]]] = []
        self.collector: asyncio.Task[None] | None = None  # the wave gathering ``waiting``, if any
        self.writes: set[asyncio.Task[None]] = set()  # waves being written; referenced, so the loop keeps them

    def submit(self, message: MailboxChangeMessage) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((message, done))
        if self.collector is None:
            self.collector = asyncio.create_task(self._collect())
        return done

    async def _collect(self) -> None:
        """Gather a wave (linger, then wait for a free write slot) and start writing it."""
        try:
            await self._linger()
            while len(self.writes) >= WAVES_IN_FLIGHT:
                await asyncio.wait(self.writes, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (the loop is closing): never strand a request
            self.collector = None
            wave, self.waiting = self.waiting, []
            _settle([f for _, f in wave], RuntimeError("hint writer stopped"))
            raise
        # No await from here on: a hint submitted after this point starts the next wave.
        self.collector = None
        wave, self.waiting = self.waiting, []
        write = asyncio.create_task(self._write_wave(wave))
        self.writes.add(write)
        write.add_done_callback(self.writes.discard)

    @classmethod
    async def _write_wave(cls, wave: list[tuple[MailboxChangeMessage, asyncio.Future[None]]]) -> None:
        try:
            await asyncio.gather(*(cls._write(m) for m in _pack(wave)))
        except BaseException as error:  # a bug in packing must not leave requests waiting forever
            _settle([f for _, f in wave], error)
            raise

    async def _linger(self) -> None:
        """Let the requests of a burst join the wave before it is written.

        In a burst the host parses requests over many loop turns and each reaches submit() in its own;
        a wave written at the first of them would make all the others wait a whole write behind it. So
        the wave waits while hints keep arriving — until two loop turns bring none, at most
        ``LINGER_SECONDS``. A lone request waits two loop turns (microseconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        quiet_turns, seen = 0, len(self.waiting)
        while quiet_turns < 2 and loop.time() < deadline:
            await asyncio.sleep(0)
            quiet_turns = quiet_turns + 1 if len(self.waiting) == seen else 0
            seen = len(self.waiting)

    @staticmethod
    async def _write(pending: _Pending) -> None:
        try:
            await enqueue(pending.body)  # type: ignore[arg-type]  # a message or a bundle
        except Exception as error:
            _settle(pending.futures, error)
            return
        _settle(pending.futures, None)
        # Telemetry per stored message, not per request: a burst's hundreds of POSTs make a few dozen events.
        for m in pending.members or [pending]:
            track_event(events.NOTIFICATIONS_RECEIVED, mailbox=m.body["mailbox"],
                        subscriptionId=m.body["subscriptionId"], itemCount=len(m.body["changes"]),
                        requestCount=len(m.futures), correlationId=m.body["correlationId"])


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():  # a waiter whose client went away has cancelled its own
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _HintBatcher] = weakref.WeakKeyDictionary()


def enqueue_hint(message: MailboxChangeMessage) -> asyncio.Future[None]:
    """Store a change hint for the reconcile worker, sharing the write with concurrent hints (see above).

    Returns a future that completes once the hint is stored, or fails with the storage error."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _HintBatcher()
    return batcher.submit(message)
