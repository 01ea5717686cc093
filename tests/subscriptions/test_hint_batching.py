"""Group commit of change hints: concurrent hints share queue writes, none is lost, every message fits a
queue message, a burst over many mailboxes goes out as bundles that the reconcile worker splits, and a
failed write fails every request that waited on it (so each answers 503 and Graph retries)."""

from __future__ import annotations

import asyncio
import base64
import json

import azure.functions as func
from azure.storage.queue import QueueClient

from shared.endpoints import hint_batching
from shared.endpoints.hint_batching import enqueue_hint
from shared.messages.mailbox_changes import MailboxChangeMessage, change_message
from shared.workers import reconcile

CLINIC = "clinic@contoso.test"
# Graph event ids are about 150 characters; short test ids would hide a size bug.
LONG_ID = "AAMkADAwATM0MDAAMS1hYjA5LTk4ZjQtMDACLTAwCgBGAAADmS3bQWq0FEe0cBxyTpBCWgcAz0WbNunnV0yNKaBbhLpABQAAAgENAAAA" \
          "z0WbNunnV0yNKaBbhLpABQAAAx28ZAAAAA=="
QUEUE_MESSAGE_LIMIT = 64 * 1024  # bytes of base64, Azure's limit


def hint(event: str, mailbox: str = CLINIC) -> MailboxChangeMessage:
    return change_message(mailbox, subscription_id="s", changes=[{"changeType": "updated", "eventId": event}],
                          reason="notification")


def queued(azurite) -> list[dict]:
    client = QueueClient.from_connection_string(azurite.connection_string, "mailbox-changes")
    out = []
    while batch := list(client.receive_messages(max_messages=32)):
        for m in batch:
            assert len(m.content.encode()) <= QUEUE_MESSAGE_LIMIT
            out.append(json.loads(base64.b64decode(m.content)))
            client.delete_message(m)
    return out


def changes_of(messages: list[dict]) -> list[tuple[str, str]]:
    flat = [m for body in messages for m in body.get("bundle", [body])]
    return sorted((m["mailbox"], c["eventId"]) for m in flat for c in m["changes"])


async def test_concurrent_hints_share_writes_and_none_is_lost(clean_env, azurite) -> None:
    await asyncio.gather(*(enqueue_hint(hint(f"e{i}")) for i in range(200)))
    messages = queued(azurite)
    assert len(messages) < 20  # a handful of writes, not 200
    assert not any("bundle" in m for m in messages)  # one mailbox: plain messages
    assert changes_of(messages) == sorted((CLINIC, f"e{i}") for i in range(200))


async def test_real_length_ids_are_split_under_the_queue_message_limit(clean_env, azurite) -> None:
    # 1,000 changes of Graph-sized ids are ~190 KB of JSON: several messages, each under 64 KiB of base64.
    await asyncio.gather(*(enqueue_hint(hint(f"{LONG_ID}{i:04d}")) for i in range(1000)))
    messages = queued(azurite)  # asserts the size of each
    assert len(messages) >= 4
    assert changes_of(messages) == sorted((CLINIC, f"{LONG_ID}{i:04d}") for i in range(1000))


async def test_a_burst_over_many_mailboxes_is_bundled_and_split_by_the_worker(clean_env, azurite) -> None:
    mailboxes = [f"m{n}@contoso.test" for n in range(40)]
    await asyncio.gather(*(enqueue_hint(hint(f"{LONG_ID}{i}", mailboxes[i % 40])) for i in range(800)))
    written = queued(azurite)
    bundles = [m for m in written if "bundle" in m]
    assert bundles and len(written) < 20
    expected = sorted((mailboxes[i % 40], f"{LONG_ID}{i}") for i in range(800))
    assert changes_of(written) == expected

    for body in bundles:  # what the reconcile_mailbox function does with a bundle
        await reconcile.handle_message(func.QueueMessage(body=json.dumps(body).encode()))
    split = queued(azurite)
    assert not any("bundle" in m for m in split)
    assert all(m["version"] == 1 and m["reason"] == "notification" for m in split)
    direct = [m for m in written if "bundle" not in m]
    assert sorted(changes_of(split) + changes_of(direct)) == expected


async def test_few_mailboxes_get_their_own_messages(clean_env, azurite) -> None:
    mailboxes = [f"m{n}@contoso.test" for n in range(hint_batching.BUNDLE_ABOVE_MAILBOXES)]
    await asyncio.gather(*(enqueue_hint(hint(f"e{i}", mailboxes[i % len(mailboxes)])) for i in range(40)))
    messages = queued(azurite)
    assert not any("bundle" in m for m in messages)
    assert {m["mailbox"] for m in messages} == set(mailboxes)


async def test_a_failed_write_fails_every_waiting_request(clean_env, monkeypatch) -> None:
    async def broken(message: object) -> None:
        await asyncio.sleep(0.01)
        raise ConnectionError("storage is down")

    monkeypatch.setattr(hint_batching, "enqueue", broken)
    results = await asyncio.gather(*(enqueue_hint(hint(f"e{i}", f"m{i % 9}@contoso.test")) for i in range(20)),
                                   return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_bug_in_packing_fails_the_waiting_requests_instead_of_hanging(clean_env, monkeypatch) -> None:
    def broken(batch: object) -> list:
        raise ValueError("packing bug")

    monkeypatch.setattr(hint_batching, "_pack", broken)
    results = await asyncio.wait_for(asyncio.gather(*(enqueue_hint(hint(f"e{i}")) for i in range(5)),
                                                    return_exceptions=True), timeout=5)
    assert all(isinstance(r, ValueError) for r in results)


async def test_a_single_hint_is_written_at_once(clean_env, azurite) -> None:
    await asyncio.wait_for(enqueue_hint(hint("only")), timeout=5)
    assert [m["changes"] for m in queued(azurite)] == [[{"changeType": "updated", "eventId": "only"}]]


async def test_hints_arriving_over_several_loop_turns_join_one_wave(clean_env, monkeypatch) -> None:
    # In a burst the host parses requests over many loop turns; the wave waits for them (up to
    # LINGER_SECONDS) instead of writing the first alone and making the others wait behind it.
    writes: list[object] = []

    async def record(message: object) -> None:
        writes.append(message)

    monkeypatch.setattr(hint_batching, "enqueue", record)
    monkeypatch.setattr(hint_batching, "LINGER_SECONDS", 60)  # only the quiet turns end the wait here
    futures = []
    for i in range(30):
        futures.append(enqueue_hint(hint(f"e{i}", f"m{i % 10}@contoso.test")))
        await asyncio.sleep(0)
    await asyncio.gather(*futures)
    assert len(writes) == 1 and len(writes[0]["bundle"]) == 10


async def test_a_wave_is_written_while_an_earlier_one_is_still_in_flight_but_no_more_than_two(
        clean_env, monkeypatch) -> None:
    # A slow first write (a small early wave of a burst) must not hold back the hints that came after it;
    # but while WAVES_IN_FLIGHT waves are being written, later hints wait and gather into one wave.
    release = {name: asyncio.Event() for name in ("first", "second")}
    writes: list[list[str]] = []

    async def held(message: dict) -> None:
        events = [c["eventId"] for m in message.get("bundle", [message]) for c in m["changes"]]
        writes.append(events)
        if events[0] in release:
            await release[events[0]].wait()

    async def until(condition) -> None:
        async with asyncio.timeout(5):
            while not condition():
                await asyncio.sleep(0)

    monkeypatch.setattr(hint_batching, "enqueue", held)
    assert hint_batching.WAVES_IN_FLIGHT == 2
    first = enqueue_hint(hint("first"))
    await until(lambda: writes)
    second = enqueue_hint(hint("second"))
    await until(lambda: len(writes) == 2)  # written although the first wave is still in flight
    later = [enqueue_hint(hint(f"later-{i}")) for i in range(3)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert writes == [["first"], ["second"]] and not any(f.done() for f in (first, second, *later))
    release["second"].set()
    await asyncio.wait_for(second, timeout=5)
    await asyncio.wait_for(asyncio.gather(*later), timeout=5)  # one slot free: the later hints, as one wave
    assert writes[2:] == [["later-0", "later-1", "later-2"]] and not first.done()
    release["first"].set()
    await asyncio.wait_for(first, timeout=5)
