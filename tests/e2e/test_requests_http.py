"""requests.http, the README's runnable requests, run top to bottom against the `make run` stack.

The file is parsed as VS Code's REST Client reads it: ``@name = value`` file variables, requests separated by
``###``, ``# @name`` naming a request whose JSON answer later requests quote as
``{{name.response.body.$.path}}``. ``python -m devhost.stack`` is started on free ports, as `make run` starts
it; the file's ``@host``, ``@sandbox`` and ``@receiver`` are pointed at them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devhost.processes import ROOT, free_port, python_module, stop_process

pytestmark = pytest.mark.slow

VARIABLE = re.compile(r"^@(\w+)\s*=\s*(.*)$")
REFERENCE = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")
PATH_STEP = re.compile(r"\.(\w+)|\[(\d+)\]")


@dataclass
class Request:
    title: str
    name: str | None
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


def parse(text: str) -> tuple[dict[str, str], list[Request]]:
    """The file variables and the requests of a REST Client file."""
    variables: dict[str, str] = {}
    requests: list[Request] = []
    chunks = re.split(r"^###([^\n]*)$", text, flags=re.M)
    for title, block in zip(["", *chunks[1::2]], chunks[::2], strict=True):
        name: str | None = None
        lines: list[str] = []
        for line in block.strip("\n").splitlines():
            if match := VARIABLE.match(line):
                variables[match[1]] = match[2].strip()
            elif line.startswith("# @name "):
                name = line.removeprefix("# @name ").strip()
            elif line.startswith(("#", "//")) and not lines:
                continue
            elif lines or line.strip():
                lines.append(line)
        if not lines:
            continue
        method, url = lines[0].split()[:2]
        headers: dict[str, str] = {}
        rest = lines[1:]
        while rest and rest[0].strip():
            key, value = rest.pop(0).split(":", 1)
            headers[key.strip()] = value.strip()
        requests.append(Request(title.strip(), name, method, url, headers, "\n".join(rest).strip()))
    return variables, requests


def json_path(document: Any, path: str) -> Any:
    """``$.a.b[0].c`` in a JSON document (the subset of JSONPath the file uses)."""
    assert path.startswith("$"), path
    for key, index in PATH_STEP.findall(path[1:]):
        document = document[key] if key else document[int(index)]
    return document


class Runner:
    def __init__(self, variables: dict[str, str]) -> None:
        self.variables = variables
        self.answers: dict[str, httpx.Response] = {}

    def resolve(self, text: str) -> str:
        def value(match: re.Match[str]) -> str:
            reference = match[1]
            if reference.startswith("$datetime"):  # REST Client's {{$datetime iso8601 [offset unit]}}
                _, _, *offset = reference.split()
                units = {"d": "days", "h": "hours", "m": "minutes"}
                moment = datetime.now(UTC) + (timedelta(**{units[offset[1]]: int(offset[0])}) if offset
                                              else timedelta())
                return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if reference in self.variables:
                return self.resolve(self.variables[reference])
            name, _, path = reference.partition(".response.body.")
            return str(json_path(self.answers[name].json(), path))

        return REFERENCE.sub(value, text)

    def send(self, client: httpx.Client, request: Request) -> httpx.Response:
        headers = {key: self.resolve(value) for key, value in request.headers.items()}
        response = client.request(request.method, self.resolve(request.url), headers=headers,
                                  content=self.resolve(request.body).encode() or None)
        if request.name:
            self.answers[request.name] = response
        return response


@pytest.fixture
def stack() -> Iterator[dict[str, int]]:
    """``python -m devhost.stack`` (make run's stack) on free ports, its three demo flows registered."""
    ports = {name: free_port() for name in ("DEVHOST_PORT", "SANDBOX_PORT", "SANDBOX_TLS_PORT", "RECEIVER_PORT",
                                            "AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT", "AZURITE_TABLE_PORT")}
    env = {**os.environ, **{name: str(port) for name, port in ports.items()}}
    process = python_module("devhost.stack", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    output: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.decode())
            if "Ctrl-C stops everything" in output[-1]:
                break
        else:
            raise AssertionError("the stack did not start:\n" + "".join(output))
        assert sum("registered on" in line for line in output) == 3, "".join(output)
        yield ports
    finally:
        stop_process(process, sig=signal.SIGTERM)


def wait_for(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (answer := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.3)
    return answer


def test_every_request_of_requests_http_answers_as_it_says(stack: dict[str, int]) -> None:
    variables, requests = parse((ROOT / "requests.http").read_text())
    assert len(requests) >= 25 and {r.method for r in requests} == {"GET", "POST", "PATCH", "DELETE"}
    variables.update(host=f"http://127.0.0.1:{stack['DEVHOST_PORT']}",
                     sandbox=f"http://127.0.0.1:{stack['SANDBOX_PORT']}",
                     receiver=f"http://127.0.0.1:{stack['RECEIVER_PORT']}")
    runner = Runner(variables)
    expected = {"POST": {200, 201, 202, 204}, "DELETE": {204}, "GET": {200}, "PATCH": {200, 204}}
    with httpx.Client(timeout=60) as client:

        def received(flow: str) -> list[dict[str, Any]]:
            answer = client.get(f"{variables['receiver']}/received").json()["value"]
            return [entry for entry in answer if entry["flow"] == flow]

        for request in requests:
            if request.name == "deadLetters":  # the dead letter is written by the delivery, after the test event
                wait_for(lambda request=request: runner.send(client, request).json()["deadLetters"])
            response = runner.send(client, request)
            assert response.status_code in expected[request.method], (
                f"{request.title}: {request.method} {runner.resolve(request.url)} answered "
                f"{response.status_code} {response.text}")
            if request.name == "booked":  # what the README promises: seconds later the clinic's flow receives it
                booked = response.json()["id"]
                wait_for(lambda booked=booked: [e for e in received("AppointmentCreated")
                                                if e["payload"]["AppointmentId"] == booked])
        test_events = wait_for(lambda: received("salon-updated"))
        assert test_events[0]["payload"]["IsTest"] is True
