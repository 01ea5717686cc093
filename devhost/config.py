"""What the local host reads before it loads the app: local.settings.json, host.json, keys.

As with ``func start``, ``local.settings.json`` ``Values`` are copied into the environment, and a
variable already set in the environment wins. ``host.json`` gives the HTTP route prefix, the queue
trigger settings and the timers' ``singleton`` lock periods; missing entries take the Functions runtime's
defaults. As on Azure, an app setting
``AzureFunctionsJobHost__<path>`` (e.g. ``AzureFunctionsJobHost__extensions__queues__maxDequeueCount``)
overrides the host.json value at that path.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def timespan_seconds(value: str | int | float, name: str) -> float:
    """host.json durations are TimeSpans: ``hh:mm:ss[.fff]`` or ``d.hh:mm:ss``."""
    if isinstance(value, int | float):
        return float(value)
    found = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)", value.strip())
    if not found:
        raise ValueError(f"host.json {name}: {value!r} is not a TimeSpan like 00:00:10")
    days, hours, minutes, seconds = found.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int | None = None  # runtime default: batch_size / 2
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0  # delay before a failed message is retried
    max_dequeue_count: int = 5

    @property
    def threshold(self) -> int:
        return self.batch_size // 2 if self.new_batch_threshold is None else self.new_batch_threshold


@dataclass(frozen=True)
class SingletonOptions:
    """host.json ``singleton``: how long a timer's listener lock lasts, how often another host tries it."""

    listener_lock_period: float = 60.0
    listener_lock_recovery: float = 60.0


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = QueueOptions()
    function_timeout: float | None = None
    singleton: SingletonOptions = SingletonOptions()

    @classmethod
    def load(cls, path: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> HostConfig:
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        apply_overrides(data, environ)
        extensions = data.get("extensions", {})
        prefix = extensions.get("http", {}).get("routePrefix", "api").strip("/")
        q = extensions.get("queues", {})
        batch = int(q.get("batchSize", 16))
        if not 1 <= batch <= 32:
            raise ValueError("host.json extensions.queues.batchSize must be 1-32 (the Storage API's limit)")
        queues = QueueOptions(
            batch_size=batch,
            new_batch_threshold=int(q["newBatchThreshold"]) if "newBatchThreshold" in q else None,
            max_polling_interval=timespan_seconds(q.get("maxPollingInterval", "00:01:00"),
                                                  "extensions.queues.maxPollingInterval"),
            visibility_timeout=timespan_seconds(q.get("visibilityTimeout", "00:00:00"),
                                                "extensions.queues.visibilityTimeout"),
            max_dequeue_count=int(q.get("maxDequeueCount", 5)),
        )
        timeout = data.get("functionTimeout")
        single = data.get("singleton", {})
        singleton = SingletonOptions(
            timespan_seconds(single.get("listenerLockPeriod", "00:01:00"), "singleton.listenerLockPeriod"),
            timespan_seconds(single.get("listenerLockRecoveryPollingInterval", "00:01:00"),
                             "singleton.listenerLockRecoveryPollingInterval"))
        return cls(prefix, queues, timespan_seconds(timeout, "functionTimeout") if timeout else None, singleton)


OVERRIDE_PREFIX = "azurefunctionsjobhost__"


def apply_overrides(data: dict[str, Any], environ: dict[str, str] | os._Environ[str]) -> None:
    """Apply ``AzureFunctionsJobHost__a__b__c`` settings to host.json's ``a.b.c`` (names match without case,
    as the runtime's configuration does)."""
    for name, value in environ.items():
        if not name.lower().startswith(OVERRIDE_PREFIX):
            continue
        *parents, leaf = name[len(OVERRIDE_PREFIX):].split("__")
        node = data
        for part in parents:
            key = next((k for k in node if k.lower() == part.lower()), part)
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        key = next((k for k in node if k.lower() == leaf.lower()), leaf)
        node[key] = value


def apply_local_settings(path: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, Any]:
    """Copy ``Values`` into ``environ`` where not already set; return the file's ``Host`` section."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if data.get("IsEncrypted"):
        raise ValueError(f"{path}: encrypted local settings are not supported; set IsEncrypted to false")
    for name, value in (data.get("Values") or {}).items():
        environ.setdefault(name, "" if value is None else str(value))
    return data.get("Host") or {}


@dataclass(frozen=True)
class Keys:
    """Local stand-ins for the Function App's function and master (admin) keys."""

    function_key: str
    master_key: str

    @classmethod
    def from_env(cls) -> Keys:
        return cls(os.environ.get("DEVHOST_FUNCTION_KEY", "local-function-key"),
                   os.environ.get("DEVHOST_MASTER_KEY", "local-master-key"))
