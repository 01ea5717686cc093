"""shared.contracts.ncrontab: 6-field NCRONTAB expressions as the Functions host reads and runs them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest

from shared.contracts import ncrontab

MONDAY = datetime(2026, 12, 7, 5, 55, tzinfo=UTC)


@pytest.mark.parametrize("expression", [
    "0 */5 * * * *", "0 */30 * * * *", "0 0 * * * *", "0 0 9-17/2 * * Mon-Fri", "0 0 0 1 Jan-Mar *", "5/15 * * * * *",
    "0 */59 * * * *", "0 0 0 */30 * *",
])
def test_accepted(expression: str) -> None:
    ncrontab.check(expression)


@pytest.mark.parametrize(("expression", "reason"), [
    ("*/5 * * * *", "6 fields"),
    ("0 */99 * * * *", "minute field's step 99 is outside 1-59"),
    ("0 */60 * * * *", "minute field's step 60"),
    ("0 0 */24 * * *", "hour field's step 24 is outside 1-23"),
    ("0 61 * * * *", "bad minute"),
    ("0 0 0 L * *", "day field's 'L'"),
    ("0 0 0 ? * *", "day field's '?'"),
    ("0 0 0 * * 5#2", "day-of-week field's '5#2'"),
    ("0 0 Mon * * *", "hour field's 'Mon'"),
    ("0 0 0 31 2 *", "bad day-of-month"),
])
def test_refused(expression: str, reason: str) -> None:
    with pytest.raises(ncrontab.NcrontabError, match=reason):
        ncrontab.check(expression)


def test_fire_times_are_strictly_after_and_in_order() -> None:
    assert list(islice(ncrontab.fire_times("0 */5 * * * *", MONDAY), 3)) == [
        datetime(2026, 12, 7, 6, 0, tzinfo=UTC), datetime(2026, 12, 7, 6, 5, tzinfo=UTC),
        datetime(2026, 12, 7, 6, 10, tzinfo=UTC)]


def test_day_of_month_and_day_of_week_both_match_as_in_ncrontab() -> None:
    # Friday the 13th, not "every 13th and every Friday" (cron's OR).
    fridays_13 = list(islice(ncrontab.fire_times("0 0 0 13 * Fri", MONDAY), 3))
    assert [d.date().isoformat() for d in fridays_13] == ["2027-08-13", "2028-10-13", "2029-04-13"]
    assert list(ncrontab.fire_times("0 0 0 30 2 Mon", MONDAY)) == []  # never: February has no 30th
    # With a '*' in one of them, the other alone decides.
    assert next(ncrontab.fire_times("0 0 0 * * Fri", MONDAY)).date().isoformat() == "2026-12-11"


def test_shortest_period() -> None:
    assert ncrontab.shortest_period("0 */5 * * * *", MONDAY) == timedelta(minutes=5)
    assert ncrontab.shortest_period("0 0 9,17 * * *", MONDAY) == timedelta(hours=8)
    assert ncrontab.shortest_period("0 30 9 * * Mon-Fri", MONDAY) == timedelta(days=1)
    assert ncrontab.shortest_period("0 0 0 30 2 Mon", MONDAY) is None
