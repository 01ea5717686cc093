"""The local host's timer schedules: the app's NCRONTAB parser (shared.contracts.ncrontab), UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devhost.ncrontab import Schedule


def test_next_after_is_strictly_later() -> None:
    schedule = Schedule.parse("*/15 * * * * *")
    assert schedule.next_after(datetime(2026, 12, 7, 6, 0, 0, 400_000, tzinfo=UTC)) == datetime(
        2026, 12, 7, 6, 0, 15, tzinfo=UTC)
    assert Schedule.parse("0 30 9 * * Mon-Fri").next_after(datetime(2026, 12, 11, 9, 30, tzinfo=UTC)) == datetime(
        2026, 12, 14, 9, 30, tzinfo=UTC)  # Friday 09:30 -> Monday 09:30


def test_day_and_weekday_are_combined_with_and() -> None:
    assert Schedule.parse("0 0 0 13 * Fri").next_after(datetime(2026, 12, 7, tzinfo=UTC)) == datetime(
        2027, 8, 13, tzinfo=UTC)
    with pytest.raises(ValueError, match="never fires"):
        Schedule.parse("0 0 0 30 2 Mon").next_after(datetime(2026, 12, 7, tzinfo=UTC))


@pytest.mark.parametrize(("expression", "reason"), [
    ("*/5 * * * *", "must have 6 fields"), ("00:05:00", "TimeSpan"), ("0 */99 * * * *", "step 99"),
    ("0 0 0 L * *", "'L'"),
])
def test_bad_schedules_are_refused(expression: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Schedule.parse(expression)
