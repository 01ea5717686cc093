"""Six-field NCRONTAB schedules (second minute hour day month day-of-week), as timer triggers use them.

Like NCrontab (the library behind the Functions runtime), a time matches when *every* field matches —
day-of-month and day-of-week are combined with AND, not cron's OR. Times are UTC, the runtime's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTHS = {name: i for i, name in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1)}
_DAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_FIELDS = (("second", 0, 59, {}), ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day", 1, 31, {}),
           ("month", 1, 12, _MONTHS), ("day-of-week", 0, 6, _DAYS))


def _value(text: str, names: dict[str, int], field: str) -> int:
    key = text.upper()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise ValueError(f"{field}: {text!r} is not a number" + (" or a name" if names else ""))
    return int(text)


def _parse_field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step_text and (not step_text.isdigit() or step < 1):
            raise ValueError(f"{field}: bad step {step_text!r}")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = _value(a, names, field), _value(b, names, field)
        else:
            start = _value(body, names, field)
            end = high if step_text else start
        if field == "day-of-week" and end == 7:  # 7 is also Sunday
            end = 6 if start <= 6 else 0
            values.add(0)
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise ValueError(f"{field}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        parts = expression.split()
        if len(parts) != 6:
            raise ValueError(
                f"NCRONTAB {expression!r} must have 6 fields (second minute hour day month day-of-week); "
                "TimeSpan schedules are not supported on the Flex Consumption plan either"
            )
        sets = [_parse_field(text, *spec) for text, spec in zip(parts, _FIELDS, strict=True)]
        return cls(expression, *sets)

    def matches(self, when: datetime) -> bool:
        return (when.second in self.seconds and when.minute in self.minutes and when.hour in self.hours
                and when.day in self.days and when.month in self.months
                and (when.weekday() + 1) % 7 in self.weekdays)

    def next_after(self, when: datetime) -> datetime:
        """The first matching time strictly after ``when`` (whole seconds)."""
        t = when.replace(microsecond=0) + timedelta(seconds=1)
        limit = t + timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
            elif t.day not in self.days or (t.weekday() + 1) % 7 not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise ValueError(f"NCRONTAB {self.expression!r} never fires")
