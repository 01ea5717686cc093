"""Six-field NCRONTAB expressions (second minute hour day month day-of-week), as the Functions host's timer
triggers read them: whether one is valid (``check``), and when it fires (``fire_times``).

cronsim parses and evaluates them (6 fields: seconds first). Three rules of NCrontab, the library behind the
host, are applied on top, so that an expression passing here is one the host indexes and runs as it does:

* **Dialect.** NCrontab knows numbers, month and day names, ``*``, ranges, lists and steps; cronsim's
  extensions (``L``, ``W``, ``#``, ``?``) are refused, and names only stand in the month and day-of-week fields.
* **Steps.** A step longer than its field's range (``*/99`` minutes) asks for what cron cannot do ("every 99
  minutes") and would fire at the field's first value only; it is refused.
* **Days.** A time matches when *every* field matches: day-of-month and day-of-week are combined with AND,
  where cron (and cronsim) combine them with OR when both are restricted.

cronsim rather than croniter (which gives the same answers here with ``day_or=False``): this module runs when
the settings are read, at every cold start, and croniter's import (python-dateutil) costs 30-90 ms there,
cronsim's 1-2 ms. Times are UTC, the runtime's default.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

from cronsim import CronSim, CronSimError

__all__ = ["NcrontabError", "check", "fire_times", "shortest_period"]

FIELDS: Final = ("second", "minute", "hour", "day", "month", "day-of-week")
# The longest step each field can keep: its range's length minus one (1-31 days: 30).
_LONGEST_STEP: Final = (59, 59, 23, 30, 11, 6)
_NAMED_FIELDS: Final = frozenset({"month", "day-of-week"})
_ITEM: Final = re.compile(r"(?P<body>\*|\d+|[A-Za-z]+)(?:-(?:\d+|[A-Za-z]+))?(?:/(?P<step>\d+))?")
# fire_times looks this far ahead for an expression that fires rarely (or, with the AND rule, never).
_HORIZON: Final = timedelta(days=366 * 5)


class NcrontabError(ValueError):
    """The expression is not one the Functions host would run; the message says why."""


def check(expression: str) -> None:
    """Raise ``NcrontabError`` unless ``expression`` is a 6-field NCRONTAB expression the host accepts."""
    fields = expression.split()
    if len(fields) != len(FIELDS):
        raise NcrontabError("it must have 6 fields (second minute hour day month day-of-week)")
    for text, field, longest in zip(fields, FIELDS, _LONGEST_STEP, strict=True):
        for item in text.split(","):
            match = _ITEM.fullmatch(item)
            if match is None or (field not in _NAMED_FIELDS and any(c.isalpha() for c in item)):
                raise NcrontabError(f"the {field} field's {item!r} is not a value, range, '*' or step")
            step = match["step"]
            if step is not None and not 1 <= int(step) <= longest:
                raise NcrontabError(f"the {field} field's step {step} is outside 1-{longest}")
    try:
        CronSim(expression, datetime.now(UTC))
    except CronSimError as error:
        raise NcrontabError(str(error).lower()) from None


def fire_times(expression: str, after: datetime) -> Iterator[datetime]:
    """The times ``expression`` fires strictly after ``after`` (aware, UTC), in order, for the next five years.
    ``expression`` must have passed ``check``."""
    start = after.astimezone(UTC).replace(microsecond=0)
    schedule = CronSim(expression, start)
    fields = expression.split()
    both_days = not fields[3].startswith("*") and not fields[5].startswith("*")
    for when in schedule:
        if when - start > _HORIZON:
            return
        # cronsim's OR of the two day fields, narrowed to NCrontab's AND.
        if not both_days or (schedule.match_dom(when.date()) and schedule.match_dow(when.date())):
            yield when


def shortest_period(expression: str, now: datetime, occurrences: int = 200) -> timedelta | None:
    """The shortest time between two consecutive firings among the next ``occurrences`` (within a week of
    ``now`` when it fires often); ``None`` when it fires at most once in five years."""
    shortest: timedelta | None = None
    previous: datetime | None = None
    for count, when in enumerate(fire_times(expression, now)):
        if previous is not None:
            gap = when - previous
            shortest = gap if shortest is None else min(shortest, gap)
        if count >= occurrences or (when - now > timedelta(days=8) and shortest is not None):
            break
        previous = when
    return shortest
