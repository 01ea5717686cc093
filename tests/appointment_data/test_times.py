"""Times in ISO 8601 UTC from Graph's ``dateTimeTimeZone`` (UTC, IANA, Windows names), and ``Duration``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.contracts.appointment_data import to_appointment_data
from shared.contracts.graph_times import WINDOWS_TIME_ZONES, parse_graph_datetime, parse_iso_duration

from .conftest import assert_valid
from .graph_shapes import appointment, dttz


def times(start: dict[str, Any] | None, end: dict[str, Any] | None, **extra: Any) -> tuple[str, str, int]:
    data = to_appointment_data(appointment(startDateTime=start, endDateTime=end, **extra))
    assert_valid(data)
    return data["StartTime"], data["EndTime"], data["Duration"]


def test_utc_with_graphs_seven_fraction_digits() -> None:
    assert times(dttz("2026-11-25T09:00:00.0000000"), dttz("2026-11-25T10:30:00.0000000")) == (
        "2026-11-25T09:00:00Z", "2026-11-25T10:30:00Z", 90)


@pytest.mark.parametrize(
    ("zone", "wall", "utc"),
    [
        # Fixed offsets and both sides of a DST change, as the tz database defines them.
        ("Tokyo Standard Time", "2026-11-25T09:00:00.0000000", "2026-11-25T00:00:00Z"),
        ("W. Europe Standard Time", "2026-01-15T09:00:00.0000000", "2026-01-15T08:00:00Z"),
        ("W. Europe Standard Time", "2026-07-15T09:00:00.0000000", "2026-07-15T07:00:00Z"),
        ("Pacific Standard Time", "2026-01-15T09:00:00.0000000", "2026-01-15T17:00:00Z"),
        ("Pacific Standard Time", "2026-07-15T09:00:00.0000000", "2026-07-15T16:00:00Z"),
        ("pacific standard time", "2026-07-15T09:00:00.0000000", "2026-07-15T16:00:00Z"),
        ("India Standard Time", "2026-03-01T09:00:00", "2026-03-01T03:30:00Z"),
        ("Asia/Tokyo", "2026-11-25T09:00:00.0000000", "2026-11-25T00:00:00Z"),
        ("America/Sao_Paulo", "2026-11-25T09:00:00", "2026-11-25T12:00:00Z"),
        ("UTC", "2026-11-25T09:00:00", "2026-11-25T09:00:00Z"),
        ("tzone://Microsoft/Utc", "2026-11-25T09:00:00", "2026-11-25T09:00:00Z"),
    ],
)
def test_zones_convert_to_utc(zone: str, wall: str, utc: str) -> None:
    start, _, _ = times(dttz(wall, zone), None)
    assert start == utc


@pytest.mark.parametrize("zone", ["Mars Standard Time", "tzone://Microsoft/Custom", "../../etc/passwd", "", None, 5])
def test_unknown_zone_is_taken_as_utc(zone: Any) -> None:
    start, _, _ = times({"dateTime": "2026-11-25T09:00:00.0000000", "timeZone": zone}, None)
    assert start == "2026-11-25T09:00:00Z"


def test_an_explicit_offset_wins_over_the_zone_name() -> None:
    start, _, _ = times(dttz("2026-11-25T09:00:00+09:00", "Pacific Standard Time"), None)
    assert start == "2026-11-25T00:00:00Z"


def test_duration_across_a_dst_change_counts_real_minutes() -> None:
    # 01:30 -> 03:30 local on the night Europe springs forward is one hour, not two.
    zone = "W. Europe Standard Time"
    _, _, minutes = times(dttz("2026-03-29T01:30:00", zone), dttz("2026-03-29T03:30:00", zone), duration=None)
    assert minutes == 60


def test_start_and_end_in_different_zones() -> None:
    start, end, minutes = times(dttz("2026-11-25T09:00:00", "Tokyo Standard Time"),
                                dttz("2026-11-25T01:45:00", "UTC"))
    assert (start, end, minutes) == ("2026-11-25T00:00:00Z", "2026-11-25T01:45:00Z", 105)


def test_resource_page_spelling_start_end_is_read_too() -> None:
    appt = appointment(start=dttz("2026-11-25T09:00:00"), end=dttz("2026-11-25T09:45:00"))
    del appt["startDateTime"], appt["endDateTime"]
    data = to_appointment_data(appt)
    assert (data["StartTime"], data["EndTime"], data["Duration"]) == (
        "2026-11-25T09:00:00Z", "2026-11-25T09:45:00Z", 45)


@pytest.mark.parametrize(
    ("start", "end", "duration", "minutes"),
    [
        (dttz("2026-11-25T09:00:00"), None, "PT1H30M", 90),  # no end: Graph's duration
        (None, None, "P1DT2H", 26 * 60),
        (dttz("2026-11-25T09:00:00"), dttz("2026-11-25T08:00:00"), "PT20M", 20),  # end before start
        (dttz("2026-11-25T09:00:00"), dttz("2026-11-25T09:29:59.9999999"), None, 30),  # rounding
        (None, None, "PT0.5S", 0),
        (None, None, "nonsense", 0),
        (None, None, None, 0),
        (dttz("2026-11-25T09:00:00"), dttz("2026-11-25T08:00:00"), None, 0),
    ],
)
def test_duration_in_whole_minutes(start: Any, end: Any, duration: Any, minutes: int) -> None:
    assert times(start, end, duration=duration)[2] == minutes


@pytest.mark.parametrize(
    ("raw", "delta"),
    [("PT1H30M", timedelta(minutes=90)), ("PT45M", timedelta(minutes=45)), ("P1W", timedelta(days=7)),
     ("PT0S", timedelta(0)), ("PT1.5H", timedelta(minutes=90)), ("pt10m", timedelta(minutes=10))],
)
def test_iso_durations(raw: str, delta: timedelta) -> None:
    assert parse_iso_duration(raw) == delta


@pytest.mark.parametrize("raw", ["P", "PT", "P1Y", "P1M", "-PT1H", "PT1H30", "1:30:00", "P1DT", 90, None])
def test_iso_durations_refused(raw: Any) -> None:
    assert parse_iso_duration(raw) is None


@pytest.mark.parametrize("raw", [None, {}, {"dateTime": None}, {"dateTime": "soon"}, "2026-13-40T00:00:00",
                                 {"dateTime": "0001-01-01T00:00:00", "timeZone": "Tokyo Standard Time"}])
def test_unreadable_times_are_empty(raw: Any) -> None:
    assert parse_graph_datetime(raw) is None
    assert times(raw, raw, duration=None)[:2] == ("", "")


def test_years_before_1000_are_zero_padded() -> None:
    start, _, _ = times(dttz("0999-01-01T00:00:00"), None)
    assert start == "0999-01-01T00:00:00Z"


@pytest.mark.parametrize("name", sorted(WINDOWS_TIME_ZONES))
def test_every_windows_zone_resolves_to_its_iana_zone(name: str) -> None:
    iana = ZoneInfo(WINDOWS_TIME_ZONES[name])  # raises if the tz database lacks it
    wall = datetime(2026, 7, 1, 12, 0)
    got = parse_graph_datetime({"dateTime": wall.isoformat(), "timeZone": name})
    assert got == wall.replace(tzinfo=iana).astimezone(UTC)


def test_the_windows_table_agrees_with_cldr() -> None:
    # tzlocal (a dev dependency) carries CLDR's windowsZones table: an independent copy. Every Windows id
    # in it must be in ours, mapped to a zone with the same offsets (ours may name a zone's other alias).
    from tzlocal.windows_tz import win_tz

    instants = [datetime(year, month, 15, 12, tzinfo=UTC) for year in range(2026, 2031) for month in (1, 4, 7, 10)]
    missing = sorted(set(win_tz) - set(WINDOWS_TIME_ZONES))
    differ = {name: (ours, win_tz[name]) for name, ours in WINDOWS_TIME_ZONES.items() if name in win_tz
              and [i.astimezone(ZoneInfo(ours)).utcoffset() for i in instants]
              != [i.astimezone(ZoneInfo(win_tz[name])).utcoffset() for i in instants]}
    assert (missing, differ) == ([], {})
