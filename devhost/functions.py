"""Loading ``function_app.app`` and invoking its functions the way the Python worker does.

Each registered function becomes an ``HttpFunction``, ``TimerFunction`` or ``QueueFunction``.
A trigger this host does not serve, or an input/output binding other than the HTTP return value,
stops the host at start-up with a clear message rather than silently doing nothing.

``invoke`` calls the user function with its trigger argument (and ``context`` if it asks for one),
awaits coroutines on the host's loop and runs plain functions in a thread, as the worker does, and
writes the one log line per invocation: function, trigger, outcome, duration.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from devhost.ncrontab import Schedule
from devhost.routing import RouteTemplate

log = logging.getLogger("devhost")


def substitute_settings(value: str, where: str) -> str:
    """Replace ``%NAME%`` with the app setting NAME, as binding expressions do."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ValueError(f"{where}: app setting {name!r} (used as %{name}%) is not set")
        return os.environ[name]

    return re.sub(r"%([^%]+)%", lookup, value)


@dataclass
class Function:
    name: str
    user_function: Callable[..., Any]
    trigger_arg: str

    @property
    def trigger(self) -> str:
        raise NotImplementedError

    @functools.cached_property
    def wants_context(self) -> bool:
        # Looked up once: inspect.signature costs more than a cached notification handler itself.
        return "context" in inspect.signature(self.user_function).parameters

    @functools.cached_property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


@dataclass
class HttpFunction(Function):
    template: RouteTemplate
    methods: frozenset[str] | None  # None: any method
    auth_level: str  # anonymous | function | admin

    @property
    def trigger(self) -> str:
        return "http"


@dataclass
class TimerFunction(Function):
    schedule: Schedule
    run_on_startup: bool

    @property
    def trigger(self) -> str:
        return "timer"


@dataclass
class QueueFunction(Function):
    queue_name: str
    connection: str

    @property
    def trigger(self) -> str:
        return "queue"


def _value(v: Any) -> str:
    return str(getattr(v, "value", v))


def load_functions(module_name: str = "function_app") -> list[Function]:
    module = importlib.import_module(module_name)
    app = getattr(module, "app", None)
    if app is None:
        raise RuntimeError(f"{module_name}.py defines no 'app' (a func.FunctionApp)")
    functions: list[Function] = []
    for fn in app.get_functions():
        name = fn.get_function_name()
        # The runtime's switch: app setting AzureWebJobs.<name>.Disabled = true keeps a function from running.
        if os.environ.get(f"AzureWebJobs.{name}.Disabled", "").strip().lower() in ("true", "1"):
            log.info("  %s: disabled by AzureWebJobs.%s.Disabled", name, name)
            continue
        trigger = fn.get_trigger()
        spec = trigger.get_dict_repr()
        kind = spec["type"]
        extra = [b for b in fn.get_bindings() if b is not trigger and not (b.type == "http" and b.name == "$return")]
        if extra:
            raise RuntimeError(f"function {name}: bindings {[b.type for b in extra]} are not served by the local "
                               "host; the app uses the storage SDKs directly instead of output bindings")
        common = {"name": name, "user_function": fn.get_user_function(), "trigger_arg": spec["name"]}
        if kind == "httpTrigger":
            methods = spec.get("methods")
            functions.append(HttpFunction(
                **common, template=RouteTemplate.parse(spec.get("route") or name),
                methods=frozenset(_value(m).upper() for m in methods) if methods else None,
                auth_level=_value(spec.get("authLevel", "function")).lower()))
        elif kind == "timerTrigger":
            schedule = substitute_settings(spec["schedule"], f"function {name} schedule")
            functions.append(TimerFunction(**common, schedule=Schedule.parse(schedule),
                                           run_on_startup=bool(spec.get("runOnStartup", False))))
        elif kind == "queueTrigger":
            functions.append(QueueFunction(
                **common, queue_name=substitute_settings(spec["queueName"], f"function {name} queueName").lower(),
                connection=spec.get("connection") or "AzureWebJobsStorage"))
        else:
            raise RuntimeError(f"function {name}: trigger {kind!r} is not served by the local host "
                               "(it serves httpTrigger, timerTrigger and queueTrigger)")
    return functions


class Context(func.Context):
    def __init__(self, function: Function, invocation_id: str) -> None:
        self._function, self._invocation_id = function, invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return threading.local  # type: ignore[return-value]

    @property
    def function_name(self) -> str:
        return self._function.name

    @property
    def function_directory(self) -> str:
        return os.getcwd()

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


@dataclass
class Outcome:
    result: Any = None
    error: BaseException | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


async def invoke(function: Function, trigger_value: Any, describe: str,
                 time_limit: float | None = None) -> Outcome:
    """Run one invocation and log it. Exceptions are caught and returned, never raised."""
    invocation_id = str(uuid.uuid4())
    kwargs: dict[str, Any] = {function.trigger_arg: trigger_value}
    if function.wants_context:
        kwargs["context"] = Context(function, invocation_id)
    started = time.perf_counter()
    outcome = Outcome()
    try:
        if function.is_async:
            call = function.user_function(**kwargs)
        else:
            call = asyncio.to_thread(function.user_function, **kwargs)
        async with asyncio.timeout(time_limit):
            outcome.result = await call
    except TimeoutError as exc:
        outcome.error = TimeoutError(f"timed out after {time_limit:g} s (host.json functionTimeout)")
        outcome.error.__cause__ = exc
    except asyncio.CancelledError:
        outcome.error = RuntimeError("cancelled: the host is stopping")
        raise
    except Exception as exc:
        outcome.error = exc
    finally:
        duration = (time.perf_counter() - started) * 1000
        status = "Succeeded" if outcome.error is None else "Failed"
        line = (f"Executed 'Functions.{function.name}' ({status}, trigger={function.trigger} {describe}, "
                f"duration={duration:.0f}ms, id={invocation_id})")
        if outcome.error is None:
            log.info(line)
        else:
            log.error("%s: %s", line, outcome.error, exc_info=outcome.error)
    return outcome
