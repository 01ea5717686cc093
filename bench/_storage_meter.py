"""A counting TCP proxy in front of Azurite: how many storage transactions the app makes, and of which kind.

Azure bills Storage per transaction (each REST request; a table batch is one), and Azurite counts nothing,
so a bench that must say what a design costs in transactions puts this between the app and Azurite: the
app's connection string names the proxy's ports, the proxy passes bytes through unchanged and counts each
HTTP request line by (service, resource, operation). It runs in a thread with its own event loop.

    meter = StorageMeter(azurite).start()
    settings["AzureWebJobsStorage"] = meter.connection_string
    ... meter.snapshot() ...  # Counter of (service, resource, operation)
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from typing import Any

from devhost.processes import DEV_ACCOUNT, DEV_KEY, Azurite, free_port, wait_for_port

_REQUEST_LINE = re.compile(rb"^(GET|PUT|POST|DELETE|HEAD|MERGE|PATCH) /[^/ ]+/([^ ?]*)(\?\S*)? HTTP/1\.1$")
_CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.IGNORECASE | re.MULTILINE)
_CHUNKED = re.compile(rb"^transfer-encoding:\s*chunked\s*$", re.IGNORECASE | re.MULTILINE)


def operation(service: str, method: str, path: str) -> tuple[str, str, str]:
    """(service, resource, operation) of one request: ``("queue", "deliveries", "put")`` and the like."""
    parts = path.split("/")
    if service == "queue":
        if len(parts) >= 2 and parts[1] == "messages":
            name = {"GET": "get", "POST": "put", "DELETE": "delete", "PUT": "update"}.get(method, method.lower())
            return service, parts[0], name
        return service, parts[0] or "(account)", method.lower()
    if path.startswith("$batch"):
        return service, "(batch)", "batch"
    table = path.split("(", 1)[0] or "(account)"
    return service, table, {"GET": "get" if "PartitionKey=" in path else "query", "POST": "insert", "PUT": "upsert",
                            "MERGE": "merge", "PATCH": "merge", "DELETE": "delete"}.get(method, method.lower())


class StorageMeter:
    def __init__(self, azurite: Azurite) -> None:
        self.azurite = azurite
        self.ports = {"queue": free_port(), "table": free_port()}
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.azurite.blob_port}/{DEV_ACCOUNT};"
                f"QueueEndpoint=http://127.0.0.1:{self.ports['queue']}/{DEV_ACCOUNT};"
                f"TableEndpoint=http://127.0.0.1:{self.ports['table']}/{DEV_ACCOUNT};")

    def start(self) -> StorageMeter:
        self._thread.start()
        upstream = {"queue": self.azurite.queue_port, "table": self.azurite.table_port}
        for service, port in self.ports.items():
            asyncio.run_coroutine_threadsafe(self._serve(service, port, upstream[service]), self._loop).result(10)
            wait_for_port(port)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def snapshot(self) -> Counter[tuple[str, str, str]]:
        with self._lock:
            return Counter(self.counts)

    async def _serve(self, service: str, port: int, upstream: int) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
            except OSError:
                writer.close()
                return
            await asyncio.gather(self._pipe(reader, up_writer, service), self._pipe(up_reader, writer, None),
                                 return_exceptions=True)

        await asyncio.start_server(handle, "127.0.0.1", port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count_as: str | None) -> None:
        requests = _Requests() if count_as is not None else None
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                if requests is not None and count_as is not None:
                    found = requests.feed(chunk)
                    if found:
                        with self._lock:
                            for method, path in found:
                                self.counts[operation(count_as, method, path)] += 1
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


class _Requests:
    """Splits one connection's client bytes into HTTP/1.1 requests (keep-alive: a request follows the
    previous one's body, found by its Content-Length or its chunked encoding's last chunk)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.body_left = 0  # bytes of the current body still to skip
        self.chunked = False

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        self.buffer += data
        found: list[tuple[str, str]] = []
        while True:
            if self.chunked:
                end = self.buffer.find(b"\r\n0\r\n\r\n")
                if end < 0 and not self.buffer.startswith(b"0\r\n\r\n"):
                    self.buffer = self.buffer[-8:]
                    return found
                cut = 5 if end < 0 else end + 7
                self.buffer, self.chunked = self.buffer[cut:], False
            if self.body_left:
                skipped = min(self.body_left, len(self.buffer))
                self.buffer, self.body_left = self.buffer[skipped:], self.body_left - skipped
                if self.body_left:
                    return found
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return found
            head, self.buffer = self.buffer[:head_end], self.buffer[head_end + 4:]
            match: Any = _REQUEST_LINE.match(head.split(b"\r\n", 1)[0])
            if match:
                found.append((match.group(1).decode(), match.group(2).decode()))
            length = _CONTENT_LENGTH.search(head)
            self.body_left = int(length.group(1)) if length else 0
            self.chunked = bool(_CHUNKED.search(head))


def summary(counts: Counter[tuple[str, str, str]]) -> dict[str, int]:
    """Totals by "service resource operation" (``"queue deliveries put"``), largest first."""
    return dict(Counter({" ".join(key): n for key, n in counts.items()}).most_common())
