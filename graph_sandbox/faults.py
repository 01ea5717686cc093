"""Faults and limits on demand: count-limited fault rules ("the next N requests matching method + path"),
the switches for Graph's documented limits with their counters, which reading of the documentation the
permission check follows where pages disagree (``permissions.Readings``), and the request log.

``gate.GraphGate`` applies them to every request; the notifier asks ``take_drop`` before sending.
"""

from __future__ import annotations

import fnmatch
import itertools
import time
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .permissions import Readings

if TYPE_CHECKING:
    from .app import Sandbox

# Graph's error codes for the statuses a fault can produce (graph/errors, throttling docs).
DEFAULT_CODES = {
    429: ("TooManyRequests", "Please retry again later."),
    500: ("generalException", "An unspecified error has occurred."),
    502: ("generalException", "An unspecified error has occurred."),
    503: ("serviceNotAvailable", "The service is not available. Try the request again after a delay."),
    504: ("timeout", "The operation timed out."),
}
_ids = itertools.count(1)
NOTIFICATION_KINDS = ("dropNotifications", "duplicateNotifications", "delayNotifications")


@dataclass
class FaultRule:
    """``kind="http"``: match requests; ``"dropNotifications"``: swallow change notifications;
    ``"duplicateNotifications"``: deliver change-notification batches twice (Graph is at-least-once);
    ``"delayNotifications"``: hold each batch a random ½..1 × ``latency_ms`` first, so batches arrive out of order
    (Graph does not promise order)."""

    kind: str = "http"
    method: str = "*"
    path: str = "*"  # glob on the URL path, case-insensitive, e.g. "/v1.0/subscriptions*"
    status: int | None = None
    retry_after: float | None = None
    latency_ms: int = 0
    count: int | None = 1  # None = until removed
    code: str | None = None
    message: str | None = None
    mailbox: str = "*"  # for dropNotifications: glob on the mailbox SMTP address
    send_missed: bool = False  # for dropNotifications: tell the subscription with a "missed" lifecycle event
    # The real handler runs first (a write is stored), then its answer is replaced by the fault's: Graph failing
    # (a 5xx, or a latency past the caller's timeout) after it wrote, so the caller never hears of the write.
    after_handler: bool = False
    id: str = field(default_factory=lambda: f"fault-{next(_ids)}")
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.kind == "http"
            and (self.method == "*" or self.method.upper() == method.upper())
            and fnmatch.fnmatch(path.lower(), self.path.lower())
            and (self.count is None or self.count > 0)
        )

    def consume(self) -> None:
        self.hits += 1
        if self.count is not None:
            self.count -= 1

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            "id": d["id"],
            "kind": d["kind"],
            "method": d["method"],
            "path": d["path"],
            "status": d["status"],
            "retryAfter": d["retry_after"],
            "latencyMs": d["latency_ms"],
            "remaining": d["count"],
            "code": d["code"],
            "message": d["message"],
            "mailbox": d["mailbox"],
            "afterHandler": d["after_handler"],
            "hits": d["hits"],
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FaultRule:
        kind = str(body.get("kind", "http"))
        if kind not in NOTIFICATION_KINDS and kind != "http":
            raise ValueError(f"kind must be 'http' or one of {', '.join(repr(k) for k in NOTIFICATION_KINDS)}")
        status = body.get("status")
        if status is not None and not (isinstance(status, int) and 400 <= status <= 599):
            raise ValueError("status must be an HTTP error status (400-599)")
        count = body.get("count", 1)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer or null (unlimited)")
        return cls(
            kind=kind,
            method=str(body.get("method", "*")),
            path=str(body.get("path", "*")),
            status=status,
            retry_after=body.get("retryAfter"),
            latency_ms=int(body.get("latencyMs", 0)),
            count=count,
            code=body.get("code"),
            message=body.get("message"),
            mailbox=str(body.get("mailbox", "*")),
            send_missed=bool(body.get("sendMissed", False)),
            after_handler=bool(body.get("afterHandler", False)),
        )


@dataclass
class Limits:
    subscription_writes: bool = False
    mailbox_concurrency: bool = False
    mailbox_requests: bool = False


class Faults:
    """Fault rules, switched-on limits and the request log of one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.rules: list[FaultRule] = []
        self.limits = self.configured_limits()
        self.readings = self.configured_readings()
        self.in_flight: dict[tuple[str, str], int] = defaultdict(int)  # (app, mailbox) -> requests
        self.writes: dict[str, deque[float]] = defaultdict(deque)  # app -> write times
        self.mailbox_requests: dict[tuple[str, str], deque[float]] = defaultdict(deque)  # (app, mailbox) -> times
        self.request_log: deque[dict[str, Any]] = deque(maxlen=sandbox.config.log_limit)
        self._seq = itertools.count(1)

    def reset(self) -> None:
        self.rules.clear()
        self.limits = self.configured_limits()
        self.readings = self.configured_readings()
        self.writes.clear()
        self.mailbox_requests.clear()
        self.request_log.clear()

    def configured_limits(self) -> Limits:
        on = self.sandbox.config.mailbox_limits
        return Limits(mailbox_concurrency=on, mailbox_requests=on)

    def configured_readings(self) -> Readings:
        return Readings(app_can_list_businesses=self.sandbox.config.app_can_list_businesses)

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def match(self, method: str, path: str) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(method, path):
                rule.consume()
                return rule
        return None

    def take_drop(self, mailbox: str, kind: str = "dropNotifications") -> FaultRule | None:
        """A change notification (or batch) for ``mailbox`` is about to be sent: does a rule of ``kind`` apply?"""
        for rule in self.rules:
            if (
                rule.kind == kind
                and fnmatch.fnmatch(mailbox.lower(), rule.mailbox.lower())
                and (rule.count is None or rule.count > 0)
            ):
                rule.consume()
                return rule
        return None

    def check_write_limit(self, app_id: str) -> float | None:
        """Seconds to wait when the app is over 500 subscription writes / 20 s, else None (and count it)."""
        cfg = self.sandbox.config
        now = time.monotonic()
        window = self.writes[app_id]
        while window and now - window[0] >= cfg.subscription_write_window_s:
            window.popleft()
        if len(window) >= cfg.subscription_write_limit:
            return max(0.001, cfg.subscription_write_window_s - (now - window[0]))
        window.append(now)
        return None

    def check_mailbox_requests(self, slot: tuple[str, str]) -> float | None:
        """Seconds to wait when the app made 10,000 requests to the mailbox in the last 10 minutes, else None (and
        count this one). A sliding window: a throttled request is not counted."""
        cfg = self.sandbox.config
        now = time.monotonic()
        window = self.mailbox_requests[slot]
        while window and now - window[0] >= cfg.mailbox_request_window_s:
            window.popleft()
        if len(window) >= cfg.mailbox_request_limit:
            return max(0.001, cfg.mailbox_request_window_s - (now - window[0]))
        window.append(now)
        return None

    def log(self, entry: dict[str, Any]) -> None:
        entry["seq"] = next(self._seq)
        self.request_log.append(entry)
