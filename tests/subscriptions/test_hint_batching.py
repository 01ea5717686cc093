"""Group commit of change hints: concurrent hints for one mailbox share queue writes, none is lost,
and a failed write fails every request that waited on it (so each answers 503 and Graph retries)."""

from __future__ import annotations

import asyncio
import base64
import json

from azure.storage.queue import QueueClient

from shared import notifications
from shared.notifications import change_message, enqueue_hint

CLINIC = "clinic@contoso.test"


def hint(event: str) -> notifications.MailboxChangeMessage:
    return change_message(CLINIC, subscription_id="s", changes=[{"changeType": "updated", "eventId": event}],
                          reason="notification", correlation_id="c")


def queued(azurite) -> list[dict]:
    client = QueueClient.from_connection_string(azurite.connection_string, "mailbox-changes")
    out = []
    while batch := list(client.receive_messages(max_messages=32)):
        for m in batch:
            out.append(json.loads(base64.b64decode(m.content)))
            client.delete_message(m)
    return out


async def test_concurrent_hints_share_writes_and_none_is_lost(clean_env, azurite) -> None:
    await asyncio.gather(*(enqueue_hint(hint(f"e{i}")) for i in range(200)))
    messages = queued(azurite)
    assert len(messages) < 20  # a handful of writes, not 200
    events = sorted(c["eventId"] for m in messages for c in m["changes"])
    assert events == sorted(f"e{i}" for i in range(200))
    assert all(len(m["changes"]) <= notifications.MAX_CHANGES_PER_MESSAGE for m in messages)


async def test_a_failed_write_fails_every_waiting_request(clean_env, monkeypatch) -> None:
    async def broken(message: object) -> None:
        await asyncio.sleep(0.01)
        raise ConnectionError("storage is down")

    monkeypatch.setattr(notifications, "enqueue_change", broken)
    results = await asyncio.gather(*(enqueue_hint(hint(f"e{i}")) for i in range(20)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_single_hint_is_written_at_once(clean_env, azurite) -> None:
    await asyncio.wait_for(enqueue_hint(hint("only")), timeout=5)
    assert [m["changes"] for m in queued(azurite)] == [[{"changeType": "updated", "eventId": "only"}]]

