"""Six-field NCRONTAB schedules (second minute hour day month day-of-week), as timer triggers use them.

Read and evaluated by ``shared.contracts.ncrontab``, the parser the app's settings check uses at start-up:
like NCrontab (the library behind the Functions runtime), a time matches when *every* field matches —
day-of-month and day-of-week are combined with AND, not cron's OR. Times are UTC, the runtime's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.contracts import ncrontab


@dataclass(frozen=True)
class Schedule:
    expression: str

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        if len(expression.split()) != len(ncrontab.FIELDS):
            raise ValueError(
                f"NCRONTAB {expression!r} must have 6 fields (second minute hour day month day-of-week); "
                "TimeSpan schedules are not supported on the Flex Consumption plan either"
            )
        try:
            ncrontab.check(expression)
        except ncrontab.NcrontabError as error:
            raise ValueError(f"NCRONTAB {expression!r}: {error}") from None
        return cls(expression)

    def next_after(self, when: datetime) -> datetime:
        """The first matching time strictly after ``when`` (whole seconds)."""
        for due in ncrontab.fire_times(self.expression, when):
            return due
        raise ValueError(f"NCRONTAB {self.expression!r} never fires")
