"""Outgoing calls Graph makes to the app: the validation handshake, change notifications and
lifecycle notifications, each attempt recorded in the delivery log.

Change notifications are batched per notification URL (a burst within ``batch_window_s`` goes in one
POST, several items per POST, possibly for several subscriptions), need a 2xx within
``notification_timeout_s`` (3 s in Graph) and are retried on failure or slowness following
``retry_delays_s``. Lifecycle notifications go to ``lifecycleNotificationUrl`` with the same rules.
Expired subscriptions are removed by a sweep that sends ``subscriptionRemoved``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import httpx

from .config import SandboxConfig
from .state import Subscription, graph_timestamp, now_utc

if TYPE_CHECKING:
    from .app import Sandbox

log = logging.getLogger("graph_sandbox.notifier")

VALIDATION_FAILED_STATUS = (
    "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."
)
VALIDATION_FAILED_TOKEN = (
    "Subscription validation request failed. Response must exactly match validationToken query parameter."  # noqa: S105
)
# The next two wordings are not documented (best guesses); the two above are what Graph answers.
VALIDATION_FAILED_TYPE = "Subscription validation request failed. Response must have content type text/plain."
VALIDATION_TIMED_OUT = "Subscription validation request timed out."


@dataclass
class EndpointHealth:
    """Graph's view of one notification URL: how many recent answers were slow."""

    window_started: float = field(default_factory=time.monotonic)
    total: int = 0
    slow: int = 0

    def state(self, cfg: SandboxConfig) -> str:
        if self.total < cfg.slow_min_samples:
            return "ok"
        share = self.slow / self.total
        return "dropping" if share >= 0.15 else "throttled" if share >= 0.10 else "ok"

    def to_json(self, cfg: SandboxConfig) -> dict[str, Any]:
        percent = round(100 * self.slow / self.total, 1) if self.total else 0.0
        return {"responses": self.total, "slow": self.slow, "slowPercent": percent, "state": self.state(cfg)}


class Notifier:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.client: httpx.AsyncClient | None = None
        self.log: deque[dict[str, Any]] = deque(maxlen=sandbox.config.log_limit)
        self._seq = itertools.count(1)
        self._pending: dict[str, list[dict[str, Any]]] = defaultdict(list)  # url -> items
        self._flush_scheduled: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[Any] | None = None
        self.endpoints: dict[str, EndpointHealth] = {}

    # ---- lifecycle of the notifier itself ----

    async def start(self) -> None:
        # Graph's client does not follow redirects and never uses a proxy from the environment.
        self.client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._sweeper = asyncio.create_task(self._sweep_expired())

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._sweeper] if self._sweeper else []), return_exceptions=True)
        if self.client:
            await self.client.aclose()

    def reset(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._pending.clear()
        self._flush_scheduled.clear()
        self.log.clear()
        self.endpoints.clear()

    @property
    def busy(self) -> int:
        """Batches waiting to be sent or being (re)tried."""
        return len(self._tasks) + sum(len(v) for v in self._pending.values())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(self, **entry: Any) -> dict[str, Any]:
        entry = {"seq": next(self._seq), "time": graph_timestamp(), **entry}
        self.log.append(entry)
        return entry

    # ---- validation handshake ----

    async def validate(self, url: str, purpose: str) -> str | None:
        """POST ``url?validationToken=…``; None when the endpoint echoed the token correctly, else
        the message Graph answers with."""
        assert self.client is not None
        # Graph's token is opaque text with spaces and colons, so URL decoding matters.
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote_plus(token)}"
        started = time.monotonic()
        entry: dict[str, Any] = {"kind": "validation", "purpose": purpose, "url": url, "attempt": 1, "status": None}
        try:
            response = await self.client.post(
                target,
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=self.sandbox.config.validation_timeout_s,
            )
        except httpx.TimeoutException:
            self._record(**entry, outcome="timeout", durationMs=_ms(started), error=VALIDATION_TIMED_OUT)
            return VALIDATION_TIMED_OUT
        except httpx.HTTPError as exc:
            self._record(**entry, outcome="error", durationMs=_ms(started), error=f"{type(exc).__name__}: {exc}")
            return VALIDATION_FAILED_STATUS
        entry.update(status=response.status_code, durationMs=_ms(started))
        if response.status_code != 200:
            error = VALIDATION_FAILED_STATUS
        elif not response.headers.get("content-type", "").lower().startswith("text/plain"):
            error = VALIDATION_FAILED_TYPE
        elif response.content != token.encode("utf-8"):
            error = VALIDATION_FAILED_TOKEN
        else:
            error = None
        self._record(**entry, outcome="failed" if error else "delivered", error=error)
        return error

    # ---- change notifications ----

    def event_changed(self, mailbox: str, event_id: str, change_type: str) -> None:
        """Called for every event write in a mailbox; queues notifications for its subscriptions."""
        state = self.sandbox.state
        user = state.find_user(mailbox)
        if user is None:
            return
        now = now_utc()
        for sub in list(state.subscriptions.values()):
            if sub.mailbox != mailbox.lower() or sub.expires_at() <= now:
                continue
            kinds = [change_type]
            if change_type == "created" and self.sandbox.config.updated_after_created:
                kinds.append("updated")  # Outlook typically reports an update right after a create
            for kind in kinds:
                if kind in sub.change_types():
                    self._queue(sub, user.id, event_id, kind)

    def _queue(self, sub: Subscription, user_id: str, event_id: str, change_type: str) -> None:
        resource = f"Users/{user_id}/Events/{event_id}"
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": sub.data["expirationDateTime"],
            "changeType": change_type,
            "resource": resource,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Event",
                "@odata.id": resource,
                "@odata.etag": f'W/"{uuid.uuid4().hex[:24]}"',
                "id": event_id,
            },
            "clientState": sub.data.get("clientState"),
            "tenantId": self.sandbox.config.tenant_id,
        }
        url = sub.data["notificationUrl"]
        if sub.reauthorization_due and now_utc() >= sub.reauthorization_due:
            self._record(
                kind="change",
                url=url,
                mailbox=sub.mailbox,
                attempt=0,
                status=None,
                outcome="paused",
                error="reauthorization required",
                body={"value": [item]},
            )
            return
        rule = self.sandbox.faults.take_drop(sub.mailbox)
        if rule is not None:
            self._record(
                kind="change",
                url=url,
                mailbox=sub.mailbox,
                attempt=0,
                status=None,
                outcome="dropped",
                error=f"dropped by {rule.id}",
                body={"value": [item]},
            )
            if rule.send_missed:
                self.lifecycle(sub, "missed")
            return
        self._pending[url].append(item)
        if url not in self._flush_scheduled:
            self._flush_scheduled.add(url)
            asyncio.get_running_loop().call_later(self.sandbox.config.batch_window_s, self._flush, url)

    def _flush(self, url: str) -> None:
        self._flush_scheduled.discard(url)
        items, self._pending[url] = self._pending[url], []
        size = self.sandbox.config.max_batch_size
        subs = self.sandbox.state.subscriptions
        for i in range(0, len(items), size):
            batch = items[i : i + size]
            mailbox = subs[batch[0]["subscriptionId"]].mailbox if batch[0]["subscriptionId"] in subs else ""
            delayed = self.sandbox.faults.take_drop(mailbox, "delayNotifications")
            hold = random.uniform(0.5, 1) * delayed.latency_ms / 1000 if delayed else 0.0  # noqa: S311
            self._spawn(self._deliver("change", url, {"value": batch}, hold))
            if self.sandbox.faults.take_drop(mailbox, "duplicateNotifications"):
                self._spawn(self._deliver("change", url, {"value": batch}))

    # ---- lifecycle notifications ----

    def lifecycle(self, sub: Subscription, event: str) -> bool:
        """Send a lifecycle notification; False when the subscription has no lifecycle URL."""
        url = sub.data.get("lifecycleNotificationUrl")
        if not url:
            return False
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": sub.data["expirationDateTime"],
            "tenantId": self.sandbox.config.tenant_id,
            "clientState": sub.data.get("clientState"),
            "lifecycleEvent": event,
        }
        self._spawn(self._deliver("lifecycle", url, {"value": [item]}))
        return True

    async def _sweep_expired(self) -> None:
        while True:
            await asyncio.sleep(self.sandbox.config.expiry_sweep_interval_s)
            try:
                self.remove_expired()
            except Exception:  # the sweep must outlive a bad subscription record
                log.exception("expiry sweep failed")

    def remove_expired(self) -> list[str]:
        now = now_utc()
        notice = self.sandbox.config.reauthorization_notice_s
        if notice is not None:
            # Graph warns before a subscription runs out ("when a subscription is about to expire").
            for sub in self.sandbox.state.subscriptions.values():
                expires = sub.expires_at()
                if now < expires <= now + timedelta(seconds=notice) and sub.reauthorization_notified != expires:
                    sub.reauthorization_notified = expires
                    self.lifecycle(sub, "reauthorizationRequired")
        gone = [s for s in self.sandbox.state.subscriptions.values() if s.expires_at() <= now]
        for sub in gone:
            del self.sandbox.state.subscriptions[sub.id]
            self.lifecycle(sub, "subscriptionRemoved")
        return [s.id for s in gone]

    # ---- delivery with retries ----

    def health(self, url: str) -> EndpointHealth:
        health = self.endpoints.setdefault(url, EndpointHealth())
        if time.monotonic() - health.window_started >= self.sandbox.config.slow_window_s:
            health = self.endpoints[url] = EndpointHealth()
        return health

    async def _deliver(self, kind: str, url: str, body: dict[str, Any], hold: float = 0.0) -> None:
        assert self.client is not None
        cfg = self.sandbox.config
        batch_id = str(uuid.uuid4())
        delays = (hold, *cfg.retry_delays_s)
        for attempt, delay in enumerate(delays, start=1):
            state = self.health(url).state(cfg)
            if state == "dropping":
                self._record(
                    kind=kind,
                    url=url,
                    batchId=batch_id,
                    attempt=attempt,
                    body=body,
                    status=None,
                    outcome="dropped",
                    error="endpoint throttled: 15 % or more of its answers were slow",
                )
                return
            if state == "throttled":
                delay = max(delay, cfg.throttled_delay_s)  # throttled endpoints wait 10 minutes
            if delay:
                await asyncio.sleep(delay)
            started = time.monotonic()
            entry: dict[str, Any] = {"kind": kind, "url": url, "batchId": batch_id, "attempt": attempt, "body": body}
            if state == "throttled":
                entry["throttled"] = True
            try:
                response = await self.client.post(url, json=body, timeout=cfg.notification_timeout_s)
            except httpx.TimeoutException:
                self._sample(url, slow=True)
                self._record(
                    **entry,
                    status=None,
                    outcome="timeout",
                    durationMs=_ms(started),
                    error="no answer within the timeout",
                )
                continue
            except httpx.HTTPError as exc:
                self._record(
                    **entry, status=None, outcome="error", durationMs=_ms(started), error=f"{type(exc).__name__}: {exc}"
                )
                continue
            self._sample(url, slow=time.monotonic() - started > cfg.slow_response_s)
            ok = 200 <= response.status_code < 300
            self._record(
                **entry,
                status=response.status_code,
                outcome="delivered" if ok else "failed",
                durationMs=_ms(started),
                error=None,
            )
            if ok:
                return
        self._record(
            kind=kind,
            url=url,
            batchId=batch_id,
            attempt=len(delays),
            status=None,
            outcome="discarded",
            error="retries exhausted",
            body=body,
        )

    def _sample(self, url: str, slow: bool) -> None:
        health = self.health(url)
        health.total += 1
        health.slow += int(slow)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
