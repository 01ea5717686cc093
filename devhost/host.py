"""The local Functions host: load the app, serve its triggers, stop cleanly.

Order of start-up, as ``func start``: apply local.settings.json to the environment (the environment
wins), read host.json, import ``function_app`` (a bad setting stops the host here, with the app's own
message), then serve HTTP, timers and queues on one event loop. SIGINT/SIGTERM stop polling, let
running invocations finish for a grace period, and exit; unfinished queue messages keep their lease and
are retried later, as on Azure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn

from devhost.config import HostConfig, Keys, apply_local_settings
from devhost.functions import Function, HttpFunction, QueueFunction, TimerFunction, load_functions
from devhost.http_server import HttpHost
from devhost.queues import QueueListener
from devhost.singleton import ListenerLock, host_id
from devhost.timers import run_timer

log = logging.getLogger("devhost")

SHUTDOWN_GRACE_SECONDS = 10.0


def timer_lock(function: TimerFunction, config: HostConfig, lock_host: str | None) -> ListenerLock | None:
    """The function's listener lock in AzureWebJobsStorage (none without a connection string: every host
    then runs the timer, and says so)."""
    connection = os.environ.get("AzureWebJobsStorage", "").strip()
    if lock_host is None:
        return None
    if not connection:
        log.warning("  %s: no AzureWebJobsStorage connection string, so no timer lock: every host runs it",
                    function.name)
        return None
    return ListenerLock(connection, lock_host, function.name, config.singleton.listener_lock_period,
                        config.singleton.listener_lock_recovery, os.environ.get("WEBSITE_INSTANCE_ID", ""))


async def serve(functions: list[Function], config: HostConfig, host: str, port: int,
                lock_host: str | None = None) -> None:
    keys = Keys.from_env()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    http_functions = [f for f in functions if isinstance(f, HttpFunction)]
    app = HttpHost(http_functions, config.route_prefix, keys, config.function_timeout)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                           access_log=False, http="httptools"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # we handle signals
    listeners = [QueueListener(f, config.queues, config.function_timeout)
                 for f in functions if isinstance(f, QueueFunction)]
    tasks = [asyncio.create_task(server.serve(), name="http")]
    tasks += [asyncio.create_task(run_timer(f, stopping, config.function_timeout, timer_lock(f, config, lock_host)),
                                  name=f.name)
              for f in functions if isinstance(f, TimerFunction)]
    tasks += [asyncio.create_task(listener.run(stopping), name=listener.function.name) for listener in listeners]

    while not server.started:
        if tasks[0].done():
            await tasks[0]  # re-raises why the server could not start
            raise RuntimeError(f"the HTTP server stopped before it started (port {port} in use?)")
        await asyncio.sleep(0.02)
    for f in http_functions:
        methods = ",".join(sorted(f.methods)) if f.methods else "ANY"
        log.info("  %s: [%s] http://%s:%d/%s/%s (%s)", f.name, methods, host, port, config.route_prefix,
                 f.template.template, f.auth_level)
    for f in functions:
        if isinstance(f, TimerFunction):
            log.info("  %s: timer '%s'%s", f.name, f.schedule.expression, " (runs on start-up)" * f.run_on_startup)
        elif isinstance(f, QueueFunction):
            log.info("  %s: queue '%s'", f.name, f.queue_name)
    log.info("Host started: %d functions, listening on http://%s:%d%s", len(functions), host, port,
             f" (host id {lock_host})" if lock_host else "")

    await stopping.wait()
    log.info("Host stopping: finishing running invocations (up to %.0f s)", SHUTDOWN_GRACE_SECONDS)
    await asyncio.gather(*(listener.drain(SHUTDOWN_GRACE_SECONDS) for listener in listeners))
    server.should_exit = True
    for task in tasks[1:]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    log.info("Host stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__.splitlines()[0])
    parser.add_argument("--app-dir", default=".", help="folder holding function_app.py and host.json")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: local.settings.json "
                        "Host.LocalHttpPort, else 7071)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app_dir = Path(args.app_dir).resolve()
    os.chdir(app_dir)
    sys.path.insert(0, str(app_dir))
    host_section = apply_local_settings(app_dir / "local.settings.json")
    port = args.port or int(host_section.get("LocalHttpPort", 7071))
    try:
        config = HostConfig.load(app_dir / "host.json")
        functions = load_functions("function_app")
    except Exception as exc:
        # The app's SettingsError names the bad setting; print it plainly, not as a traceback.
        log.critical("The app could not be loaded: %s: %s", type(exc).__name__, exc)
        return 1
    from shared.adapters.logs import configure_logging

    configure_logging()
    asyncio.run(serve(functions, config, args.host, port, host_id(app_dir)))
    return 0
