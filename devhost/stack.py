"""``make run``: the whole local stack — Azurite, the Graph sandbox, the local Functions host.

Starts each on its usual port (Azurite 10000-10002, sandbox 7072, host 7071; each can be moved with
an environment variable named below), creates the app's tables and queues in Azurite (Bicep does that
on Azure), prints the URLs, and stops everything on Ctrl-C or SIGTERM. Logs of the three processes are
in ``.stack/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from devhost.config import apply_local_settings
from devhost.processes import ROOT, Azurite, python_module, stop_process, wait_for_port

LOGS = ROOT / ".stack"


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def _create_storage() -> None:
    from shared.adapters.settings import get_settings
    from shared.adapters.storage import open_store

    store = open_store(get_settings().storage)
    try:
        await store.create_all()
    finally:
        await store.close()


def _start(module: str, args: list[str], log_name: str | None, port: int) -> subprocess.Popen:
    """Start ``python -m module``; its output goes to ``.stack/<log_name>``, or to this terminal if None."""
    output = (LOGS / log_name).open("w") if log_name else None
    process = python_module(module, *args, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, timeout=60, process=process)
    except Exception:
        if log_name:
            print(f"{module} did not start; its log ({LOGS / log_name}):\n{(LOGS / log_name).read_text()}")
        raise
    return process


DEMO_BUSINESS = "clinic@contoso.test"
DEMO_ADMIN = "admin@contoso.test"
DEMO_TRIGGERS = ("AppointmentCreated", "AppointmentUpdated", "AppointmentDeleted")


def register_demo_flows(host_url: str, sandbox_url: str, receiver_url: str) -> None:
    """Register the receiver for all three triggers, through the real registration API, as an admin."""
    import httpx

    token = httpx.post(f"{sandbox_url}/_sandbox/tokens/user", json={"upn": DEMO_ADMIN}).json()["access_token"]
    for trigger in DEMO_TRIGGERS:
        # The query string stands in for Power Automate's signature: it must never appear in a log.
        callback = f"{receiver_url}/flows/{trigger}?sig=demo-signature-not-for-logs"
        response = httpx.post(f"{host_url}/api/v1/bookingBusinesses/{DEMO_BUSINESS}/webhooks/{trigger}",
                              headers={"Authorization": f"Bearer {token}"}, timeout=60,
                              json={"notificationURL": callback, "resource": "Appointments",
                                    "changeType": trigger.removeprefix("Appointment")})
        if response.status_code == 201:
            print(f"Demo flow        {trigger} registered on {DEMO_BUSINESS} (webhook {response.json()['webhookId']})")
        else:
            print(f"Demo flow        {trigger} NOT registered: {response.status_code} {response.text}")


def sync_local_settings(path: Path = ROOT / "local.settings.json",
                        sample: Path = ROOT / "local.settings.sample.json") -> list[str]:
    """Add settings the sample has and the developer's copy lacks (new since it was copied); keep every
    value the developer set. Returns the names added."""
    if not path.exists():
        shutil.copy(sample, path)
        return []
    mine, theirs = json.loads(path.read_text()), json.loads(sample.read_text())
    values = mine.setdefault("Values", {})
    added = [name for name in theirs["Values"] if name not in values]
    for name in added:
        values[name] = theirs["Values"][name]
    if added:
        path.write_text(json.dumps(mine, indent=2, ensure_ascii=False) + "\n")
    return added


SANDBOX_TLS_DIR = LOGS / "graph-sandbox"  # where the sandbox writes the certificate of its HTTPS listener


def _follow_ports(host_port: int, sandbox_port: int, sandbox_tls_port: int) -> None:
    """Settings that name the default local ports follow the ports this stack really uses; the sandbox's
    certificate file is found wherever the host runs from."""
    moves = {"127.0.0.1:7072": sandbox_port, "127.0.0.1:7071": host_port, "127.0.0.1:7075": sandbox_tls_port}
    for name, value in list(os.environ.items()):
        for default, port in moves.items():
            if default in value:
                value = os.environ[name] = value.replace(default, f"127.0.0.1:{port}")
    ca_file = os.environ.get("ENTRA_CA_FILE", "")
    if ca_file and not os.path.isabs(ca_file):
        os.environ["ENTRA_CA_FILE"] = str(ROOT / ca_file)


def main() -> int:
    LOGS.mkdir(exist_ok=True)
    added = sync_local_settings()
    if added:
        print(f"local.settings.json: added new settings from the sample: {', '.join(added)}")
    apply_local_settings(ROOT / "local.settings.json")
    host_port = _port("DEVHOST_PORT", 7071)
    sandbox_port = _port("SANDBOX_PORT", 7072)
    sandbox_tls_port = _port("SANDBOX_TLS_PORT", 7075)
    _follow_ports(host_port, sandbox_port, sandbox_tls_port)
    azurite = Azurite(_port("AZURITE_BLOB_PORT", 10000), _port("AZURITE_QUEUE_PORT", 10001),
                      _port("AZURITE_TABLE_PORT", 10002))
    processes: list[subprocess.Popen] = []
    stop = {"now": False}

    def request_stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        return _run(azurite, processes, stop, host_port, sandbox_port, sandbox_tls_port)
    except (RuntimeError, TimeoutError, FileNotFoundError) as error:
        print(f"\nThe local stack could not start: {error}")
        return 1
    finally:
        print("Stopping…")
        for process in reversed(processes):
            stop_process(process)
        azurite.stop()


def _run(azurite: Azurite, processes: list[subprocess.Popen], stop: dict[str, bool], host_port: int,
         sandbox_port: int, sandbox_tls_port: int) -> int:
    azurite.start()
    # The app and the host must talk to the Azurite just started, whatever local.settings.json says.
    os.environ["AzureWebJobsStorage"] = azurite.connection_string
    asyncio.run(_create_storage())
    print(f"Azurite           tables http://127.0.0.1:{azurite.table_port}  queues http://127.0.0.1:"
          f"{azurite.queue_port}  blobs http://127.0.0.1:{azurite.blob_port}")
    processes.append(_start("graph_sandbox", ["--port", str(sandbox_port), "--tls-port", str(sandbox_tls_port),
                                              "--tls-dir", str(SANDBOX_TLS_DIR)], "sandbox.log", sandbox_port))
    print(f"Graph sandbox     http://127.0.0.1:{sandbox_port}/v1.0  (demo business {DEMO_BUSINESS}; Entra's "
          f"token endpoint also on https://127.0.0.1:{sandbox_tls_port})")
    processes.append(_start("devhost", ["--port", str(host_port)], "host.log", host_port))
    print(f"Functions host    http://127.0.0.1:{host_port}/api/  (log: {LOGS / 'host.log'})")
    receiver_port = _port("RECEIVER_PORT", 7073)
    processes.append(_start("devhost.receiver", ["--port", str(receiver_port)], None, receiver_port))
    print(f"Demo receiver     http://127.0.0.1:{receiver_port}/received  (stands in for Power Automate; "
          "prints each AppointmentData it receives here)")
    register_demo_flows(f"http://127.0.0.1:{host_port}", f"http://127.0.0.1:{sandbox_port}",
                        f"http://127.0.0.1:{receiver_port}")
    print(f"\nTry:  curl http://127.0.0.1:{host_port}/api/health   (requests.http books an appointment)"
          "\nCtrl-C stops everything.", flush=True)
    while not stop["now"]:
        for process in processes:
            if process.poll() is not None:
                print(f"{process.args[2]} exited with {process.returncode}; see {LOGS}/. Stopping.")
                return 1
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
