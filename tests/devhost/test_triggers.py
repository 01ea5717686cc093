"""Timer and queue triggers through the local host, against a real Azurite."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time

import pytest
from azure.storage.queue import QueueClient

from devhost.processes import Azurite


def queue(azurite: Azurite, name: str) -> QueueClient:
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    try:
        client.create_queue()
    except Exception:  # already there
        pass
    return client


def send(azurite: Azurite, name: str, text: str) -> None:
    queue(azurite, name).send_message(base64.b64encode(text.encode()).decode())


def peek_all(azurite: Azurite, name: str) -> list[str]:
    return [base64.b64decode(m.content).decode() for m in queue(azurite, name).peek_messages(max_messages=32)]


def test_timer_runs_on_startup_and_on_schedule(sample_host_factory) -> None:
    host = sample_host_factory(TICK_SCHEDULE="*/1 * * * * *").start()
    records = host.wait_for(lambda r: sum(x["function"] == "tick" for x in r) >= 3, timeout=10)
    ticks = [r for r in records if r["function"] == "tick"]
    assert ticks[0]["past_due"] is False
    assert "Executed 'Functions.tick' (Succeeded, trigger=timer schedule='*/1 * * * * *'" in host.log


def test_timer_runs_one_at_a_time_and_reports_past_due(sample_host_factory) -> None:
    # Each run takes 2.5 s on a 1 s schedule: runs never overlap, and the next one is past due.
    host = sample_host_factory(TICK_SCHEDULE="*/1 * * * * *", TICK_SECONDS="2.5").start()
    records = host.wait_for(lambda r: sum(x["function"] == "tick" for x in r) >= 3, timeout=15)
    ticks = [r["at"] for r in records if r["function"] == "tick"]
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert all(gap >= 2.4 for gap in gaps), gaps
    assert any(r["past_due"] for r in records[1:] if r["function"] == "tick")


def test_timer_schedule_setting_must_exist(sample_host_factory) -> None:
    host = sample_host_factory()
    host.settings.pop("TICK_SCHEDULE")  # type: ignore[attr-defined]
    import json

    (host.app_dir / "local.settings.json").write_text(json.dumps({"Values": host.settings}))  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="exited with 1"):
        host.start()
    assert "TICK_SCHEDULE" in host.log


def test_queue_message_is_processed_and_deleted(sample_host_factory, azurite: Azurite) -> None:
    host = sample_host_factory().start()
    name = host.settings["WORK_QUEUE"]  # type: ignore[attr-defined]
    send(azurite, name, "hello")
    records = host.wait_for(lambda r: any(x["function"] == "work-done" for x in r))
    work = [r for r in records if r["function"] == "work"]
    assert work[0]["body"] == "hello" and work[0]["dequeue_count"] == 1 and work[0]["invocation"]
    host.wait_for(lambda r: peek_all(azurite, name) == [], timeout=5)


def test_failing_message_goes_to_poison_after_max_dequeue_count(sample_host_factory, azurite: Azurite) -> None:
    host = sample_host_factory().start()
    name = host.settings["WORK_QUEUE"]  # type: ignore[attr-defined]
    send(azurite, name, "fail-always")
    host.wait_for(lambda r: peek_all(azurite, f"{name}-poison") == ["fail-always"], timeout=20)
    attempts = [r["dequeue_count"] for r in host.records() if r["function"] == "work"]
    assert attempts == [1, 2, 3]  # host.json maxDequeueCount = 3
    assert peek_all(azurite, name) == []
    assert f"moved to {name}-poison" in host.log


def test_non_base64_message_is_a_failed_attempt(sample_host_factory, azurite: Azurite) -> None:
    host = sample_host_factory().start()
    name = host.settings["WORK_QUEUE"]  # type: ignore[attr-defined]
    queue(azurite, name).send_message("not base64 !!")
    host.wait_for(lambda r: len(queue(azurite, f"{name}-poison").peek_messages()) == 1, timeout=20)
    assert not any(r["function"] == "work" for r in host.records())
    assert "is not base64 text" in host.log


def test_batch_of_messages_all_processed(sample_host_factory, azurite: Azurite) -> None:
    host = sample_host_factory().start()
    name = host.settings["WORK_QUEUE"]  # type: ignore[attr-defined]
    for i in range(10):
        send(azurite, name, f"m{i}")
    records = host.wait_for(lambda r: sum(x["function"] == "work-done" for x in r) == 10)
    assert sorted(r["body"] for r in records if r["function"] == "work-done") == sorted(f"m{i}" for i in range(10))


@pytest.mark.slow
def test_message_survives_host_killed_mid_invocation(sample_host_factory, azurite: Azurite) -> None:
    host = sample_host_factory().start()
    name = host.settings["WORK_QUEUE"]  # type: ignore[attr-defined]
    send(azurite, name, "slow-then-killed")
    host.wait_for(lambda r: any(x["function"] == "work" for x in r))
    host.kill()  # SIGKILL: no chance to settle the message
    # While the lease holds, nobody else can see it; it is not lost either.
    assert peek_all(azurite, name) == []
    host.start()
    records = host.wait_for(lambda r: sum(x["function"] == "work" for x in r) >= 2, timeout=20)
    assert [r["dequeue_count"] for r in records if r["function"] == "work"][:2] == [1, 2]


@pytest.mark.slow
def test_clean_stop_on_sigterm_lets_a_running_message_finish(sample_host_factory, azurite: Azurite) -> None:
    host = sample_host_factory().start()
    name = host.settings["WORK_QUEUE"]  # type: ignore[attr-defined]
    send(azurite, name, "quick")
    host.wait_for(lambda r: any(x["function"] == "work-done" for x in r))
    assert host.stop() == 0
    assert "Host stopped" in host.log


def test_lease_is_renewed_while_a_long_invocation_runs(sample_host_factory, azurite: Azurite) -> None:
    # Lease 3 s, invocation 30 s: without renewal the message would reappear and run twice.
    host = sample_host_factory().start()
    name = host.settings["WORK_QUEUE"]  # type: ignore[attr-defined]
    send(azurite, name, "slow")
    host.wait_for(lambda r: any(x["function"] == "work" for x in r))
    asyncio.run(asyncio.sleep(7))
    assert sum(r["function"] == "work" for r in host.records()) == 1


def test_hosts_of_one_app_run_each_timer_once_per_tick(sample_host_factory) -> None:
    # Two hosts of one app (same host id) on one storage account: the timer's listener lock lets one run it.
    shared = {"TICK_SCHEDULE": "*/1 * * * * *", "AzureFunctionsJobHost__singleton__listenerLockRecoveryPollingInterval":
              "00:00:01"}
    hosts = [sample_host_factory(**shared), sample_host_factory(**shared)]
    for host in hosts:
        host.env["AzureFunctionsWebHost__hostid"] = "two-hosts-one-app"  # the environment wins over the file
    first, second = (host.start() for host in hosts)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        time.sleep(0.2)
    ticks = sorted(r["at"] for h in (first, second) for r in h.records() if r["function"] == "tick")
    assert len(ticks) >= 3, ticks
    # After the start-up run, one run per second across both hosts, never two for one occurrence.
    assert all(b - a > 0.5 for a, b in itertools.pairwise(ticks[1:])), ticks
    holder, other = (first, second) if first.records() else (second, first)
    assert not other.records(), "both hosts ran the timer"
    holder.stop()  # stopped cleanly, it releases the lock: the other host takes the schedule over
    other.wait_for(lambda r: sum(x["function"] == "tick" for x in r) >= 2, timeout=5)


def test_a_host_killed_and_started_again_on_its_instance_takes_its_timer_back_at_once(sample_host_factory) -> None:
    # SIGKILL leaves the lease held (up to listenerLockPeriod); the same instance proposes the same lease id.
    host = sample_host_factory(TICK_SCHEDULE="*/1 * * * * *")
    host.env.update(AzureFunctionsWebHost__hostid="one-instance", WEBSITE_INSTANCE_ID="instance-a")
    host.start().wait_for(lambda r: len(r) >= 1, timeout=10)
    host.kill()
    killed = len(host.records())
    host.start().wait_for(lambda r: len(r) >= killed + 2, timeout=5)
