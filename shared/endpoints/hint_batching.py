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
reconcile. A burst of 200 POSTs over 50 mailboxes thus costs a handful of writes instead of ~100. The
bundles are packed by ``shared.messages.mailbox_changes``, which owns the format.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from shared.adapters.monitoring import track_event
from shared.adapters.per_loop import PerLoop
from shared.contracts import events
from shared.messages.mailbox_changes import (
    MAX_MESSAGE_JSON_BYTES,
    MailboxChangeMessage,
    bundle,
    bundle_groups,
    change_json_bytes,
    enqueue,
    json_bytes,
)

BUNDLE_ABOVE_MAILBOXES = 4  # up to this many mailboxes in a wave: direct messages, no extra queue hop
LINGER_SECONDS = 0.02  # the longest a wave waits for more hints of a burst (see _HintBatcher._linger)
# Two, not one: the first wave of a burst often leaves after a couple of requests (they came before the
# rest were parsed), and with one at a time the whole burst would wait behind that small write. Not more:
# under sustained load, hints gather into bigger waves instead of making more writes.
WAVES_IN_FLIGHT = 2


class _Pending:
    """One queue message being assembled, and the requests waiting for it."""

    def __init__(self, body: dict[str, Any], size: int, futures: list[asyncio.Future[None]]) -> None:
        self.body, self.size, self.futures = body, size, futures  # size: a mailbox message's JSON bytes so far
        self.members: list[_Pending] = []  # for a bundle: the mailbox messages in it


def _pack(batch: list[tuple[MailboxChangeMessage, asyncio.Future[None]]]) -> list[_Pending]:
    """A wave's queue messages: hints merged per mailbox (each under the size limit), bundled if many."""
    per_mailbox: dict[str, list[_Pending]] = defaultdict(list)
    for message, future in batch:
        size = sum(change_json_bytes(c) for c in message["changes"])
        groups = per_mailbox[message["mailbox"]]
        last = groups[-1] if groups else None
        if last is not None and last.size + size <= MAX_MESSAGE_JSON_BYTES:
            last.body["changes"].extend(message["changes"])
            last.body["fullResync"] = last.body["fullResync"] or message["fullResync"]
            last.size += size
            last.futures.append(future)
        else:
            body = {**message, "changes": list(message["changes"])}
            groups.append(_Pending(body, json_bytes({**body, "changes": []}) + size, [future]))
    messages = [m for groups in per_mailbox.values() for m in groups]
    if len(per_mailbox) <= BUNDLE_ABOVE_MAILBOXES:
        return messages
    return [_bundled(group) for group in bundle_groups(messages, lambda m: m.size)]


def _bundled(members: list[_Pending]) -> _Pending:
    """One bundle of the mailbox messages ``members``, and the requests waiting for any of them."""
    pending = _Pending(dict(bundle([m.body for m in members])), 0, [f for m in members for f in m.futures])
    pending.members = members
    return pending


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


_batchers: PerLoop[_HintBatcher] = PerLoop(_HintBatcher)


def enqueue_hint(message: MailboxChangeMessage) -> asyncio.Future[None]:
    """Store a change hint for the reconcile worker, sharing the write with concurrent hints (see above).

    Returns a future that completes once the hint is stored, or fails with the storage error."""
    return _batchers.get().submit(message)
