"""Heavy libraries the adapters import on first use, and their warm-up in the background.

Importing ``function_app`` is what a cold Functions worker does before it can index the app and take a
request, so it must be cheap. The queue SDK (with azure-core's two HTTP stacks, aiohttp and requests),
httpx and PyJWT (with cryptography) are most of that time, and no decorator needs them: the adapters name
them with ``lazy("httpx")``, a stand-in whose first attribute access imports the module (annotations stay
strings, so type checkers still see the real module, see the adapters' ``TYPE_CHECKING`` imports).

``warm_up()`` imports every one of them in a daemon thread once the app is indexed, so the first
request usually finds them loaded. ``LAZY_MODULES`` is the list; the test of ``import function_app``
checks that none of them is loaded by the import itself.

Imports of overlapping packages must not run in two threads at once: Python's import system detects the
lock cycle two threads can form in partly initialised packages (azure-core, cryptography, urllib3) and
fails one of the imports with ``_DeadlockError``. So the app's own imports of these SDKs wait for the
warm-up to finish (``settled()``): a lazy module's first use does, and so must every function-level import
of a package that shares dependencies with them (azure-identity, the Graph SDK). The wait is bounded by
the warm-up (~0.3 s, once) and only ever happens in a request that needed those imports anyway. Module
top levels must never read a lazy module's attribute (that would import it, and wait, under an import lock).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

#: What the adapters import on first use (and the warm-up imports ahead of it), heaviest first.
LAZY_MODULES: tuple[str, ...] = (
    "azure.storage.queue.aio",  # the queue SDK, sync clients included, and azure-core's requests transport
    "aiohttp",  # what the async storage clients send with (azure-core imports it on their first request)
    "httpx",
    "httpcore",  # httpx's transport, which shared.adapters.callback_client builds on
    "jwt",  # PyJWT and cryptography
)


_warm_up: threading.Thread | None = None


def settled() -> None:
    """Wait for the warm-up imports, if they are still running (see above: no two threads import at once)."""
    thread = _warm_up
    if thread is not None and thread is not threading.current_thread():
        thread.join()


class LazyModule:
    """A module imported when one of its attributes is first read (``lazy("httpx").AsyncClient``)."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            settled()
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{'' if self._module is None else ' (loaded)'}>"


def lazy(name: str) -> Any:
    """``name`` as a module imported on first use. ``name`` must be in ``LAZY_MODULES`` (or be part of one
    of them), so that the warm-up loads it and the cold-start test watches it."""
    if not any(name == m or name.startswith(f"{m}.") or m.startswith(f"{name}.") for m in LAZY_MODULES):
        raise ValueError(f"{name!r} is not in LAZY_MODULES")
    return LazyModule(name)


def _import_all(then: Callable[[], object] | None) -> None:
    for name in LAZY_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # the request that needs it will raise the same error, where it can be handled
            log.warning("warm-up could not import %s", name, exc_info=True)
    if then is not None:
        then()


def warm_up(then: Callable[[], object] | None = None) -> threading.Thread:
    """Import ``LAZY_MODULES`` in a daemon thread (once per process), then call ``then``; returns the thread."""
    global _warm_up
    if _warm_up is None:
        _warm_up = threading.Thread(target=_import_all, args=(then,), name="warm-up imports", daemon=True)
        _warm_up.start()
        # A process that ends within the warm-up (a script, a test's subprocess) waits for it: interpreter
        # shutdown racing an import in a daemon thread can kill the process without a word (seen: a
        # non-zero exit with an empty stderr in bench.cold_start and tests/unit/test_cold_start.py).
        atexit.register(settled)
    return _warm_up
