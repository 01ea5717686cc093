"""The chaos bench's short version (``bench.chaos``): Graph throttling, a storage outage, a crashing host and
two hosts of which one dies, one at a time over the whole local stack; nothing may be lost, duplicated under a
new key or left in a poison queue. The full table (every fault class, 60 s windows) is ``python -m bench.chaos``."""

from __future__ import annotations

import pytest

from bench import chaos

pytestmark = pytest.mark.slow

# In the table's order. Failing flows and notification faults have fast tests of their own (tests/delivery,
# tests/e2e/test_appointment_flow.py); these four are what only the whole chain shows.
CI_FAULTS = ["graph-503", "storage-restart", "host-kill", "2-hosts-one-killed"]


def test_short_chaos_loses_nothing() -> None:
    lines: list[str] = []
    rows = chaos.run(CI_FAULTS, mailbox_count=2, window=10, drain=180, echo=lines.append)
    assert [r.fault for r in rows] == ["none", *CI_FAULTS]
    table = "\n".join(lines)
    for row in rows:
        assert row.expected > 0 and row.changes > 0, table
        assert row.clean, f"{row.fault}: {row}\n{table}"
        assert row.unexpected == 0, f"{row.fault}: {row}\n{table}"
    assert next(r for r in rows if r.fault == "host-kill").kills >= 3, table
    assert next(r for r in rows if r.fault == "2-hosts-one-killed").kills == 1, table
