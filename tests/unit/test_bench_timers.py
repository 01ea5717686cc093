"""The benches' list of timers (bench._stack.TIMERS) is the app's: every timer of function_app, on the setting its
schedule reads, at the runs an hour of that setting's default. The cost figures (docs/operations.md) scale each
timer's measured run by those runs, so a timer left out, or a changed default, would silently be missing."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bench._stack import FIXED_TIMERS, TIMERS
from devhost.processes import ROOT
from shared.adapters.settings import SPECS
from shared.contracts.ncrontab import shortest_period

TIMER = re.compile(r'@app\.timer_trigger\(schedule="([^"]+)"[^\n]*\n(?:@[^\n]*\n)*async def (\w+)')


def test_every_timer_of_the_app_is_measured_on_its_schedule_setting() -> None:
    found = {name: schedule for schedule, name in TIMER.findall((ROOT / "function_app.py").read_text())}
    assert len(found) >= 9
    assert {name: t.setting for name, t in TIMERS.items()} == {
        name: schedule.strip("%") for name, schedule in found.items() if schedule.startswith("%")}
    assert set(FIXED_TIMERS) == {name for name, schedule in found.items() if not schedule.startswith("%")}


def test_runs_an_hour_follow_the_settings_defaults() -> None:
    defaults = {s.name: str(s.default) for s in SPECS}
    for name, timer in TIMERS.items():
        period = shortest_period(defaults[timer.setting], datetime(2026, 3, 1, tzinfo=UTC))
        assert period is not None
        assert abs(timer.per_hour - 3600 / period.total_seconds()) < 1e-9, name
        assert timer.shipped == defaults[timer.setting]
