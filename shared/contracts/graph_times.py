"""Graph's times: ``dateTimeTimeZone`` and ISO 8601 strings to UTC, Windows time zone names to IANA ones,
``Duration`` strings to timedeltas, and the contract's ISO 8601 UTC text.

Pure: no I/O, no clock. A ``dateTimeTimeZone`` may name UTC, an IANA zone or a Windows zone
("Tokyo Standard Time", through ``WINDOWS_TIME_ZONES``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["WINDOWS_TIME_ZONES", "iso_utc", "parse_graph_datetime", "parse_iso_duration"]

# Windows time zone ids Graph/Exchange may write in dateTimeTimeZone.timeZone -> IANA, after CLDR's
# windowsZones "001" (primary) mappings. Where CLDR's primary is a renamed zone (Asia/Calcutta,
# Europe/Kiev…), we use a zone with the same rules that every tz database has.
WINDOWS_TIME_ZONES: Final[Mapping[str, str]] = {
    "Dateline Standard Time": "Etc/GMT+12",
    "UTC-11": "Etc/GMT+11",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Alaskan Standard Time": "America/Anchorage",
    "Pacific Standard Time": "America/Los_Angeles",
    "Pacific Standard Time (Mexico)": "America/Tijuana",
    "UTC-09": "Etc/GMT+9",
    "UTC-08": "Etc/GMT+8",
    "US Mountain Standard Time": "America/Phoenix",
    "Mountain Standard Time": "America/Denver",
    "Mountain Standard Time (Mexico)": "America/Mazatlan",
    "Central America Standard Time": "America/Guatemala",
    "Central Standard Time": "America/Chicago",
    "Central Standard Time (Mexico)": "America/Mexico_City",
    "Canada Central Standard Time": "America/Regina",
    "SA Pacific Standard Time": "America/Bogota",
    "Eastern Standard Time": "America/New_York",
    "Eastern Standard Time (Mexico)": "America/Cancun",
    "US Eastern Standard Time": "America/Indiana/Indianapolis",
    "Cuba Standard Time": "America/Havana",
    "Haiti Standard Time": "America/Port-au-Prince",
    "Venezuela Standard Time": "America/Caracas",
    "Paraguay Standard Time": "America/Asuncion",
    "Atlantic Standard Time": "America/Halifax",
    "SA Western Standard Time": "America/La_Paz",
    "Pacific SA Standard Time": "America/Santiago",
    "Newfoundland Standard Time": "America/St_Johns",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Argentina Standard Time": "America/Argentina/Buenos_Aires",
    "SA Eastern Standard Time": "America/Cayenne",
    "Montevideo Standard Time": "America/Montevideo",
    "UTC-02": "Etc/GMT+2",
    "Azores Standard Time": "Atlantic/Azores",
    "Cape Verde Standard Time": "Atlantic/Cape_Verde",
    "UTC": "Etc/UTC",
    "Coordinated Universal Time": "Etc/UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "Morocco Standard Time": "Africa/Casablanca",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Romance Standard Time": "Europe/Paris",
    "Central European Standard Time": "Europe/Warsaw",
    "W. Central Africa Standard Time": "Africa/Lagos",
    "Jordan Standard Time": "Asia/Amman",
    "GTB Standard Time": "Europe/Bucharest",
    "Middle East Standard Time": "Asia/Beirut",
    "Egypt Standard Time": "Africa/Cairo",
    "E. Europe Standard Time": "Europe/Chisinau",
    "Syria Standard Time": "Asia/Damascus",
    "South Africa Standard Time": "Africa/Johannesburg",
    "FLE Standard Time": "Europe/Helsinki",
    "Israel Standard Time": "Asia/Jerusalem",
    "Kaliningrad Standard Time": "Europe/Kaliningrad",
    "Sudan Standard Time": "Africa/Khartoum",
    "Libya Standard Time": "Africa/Tripoli",
    "Namibia Standard Time": "Africa/Windhoek",
    "Arabic Standard Time": "Asia/Baghdad",
    "Turkey Standard Time": "Europe/Istanbul",
    "Arab Standard Time": "Asia/Riyadh",
    "Belarus Standard Time": "Europe/Minsk",
    "Russian Standard Time": "Europe/Moscow",
    "E. Africa Standard Time": "Africa/Nairobi",
    "Iran Standard Time": "Asia/Tehran",
    "Arabian Standard Time": "Asia/Dubai",
    "Azerbaijan Standard Time": "Asia/Baku",
    "Mauritius Standard Time": "Indian/Mauritius",
    "Georgian Standard Time": "Asia/Tbilisi",
    "Caucasus Standard Time": "Asia/Yerevan",
    "Afghanistan Standard Time": "Asia/Kabul",
    "West Asia Standard Time": "Asia/Tashkent",
    "Ekaterinburg Standard Time": "Asia/Yekaterinburg",
    "Pakistan Standard Time": "Asia/Karachi",
    "India Standard Time": "Asia/Kolkata",
    "Sri Lanka Standard Time": "Asia/Colombo",
    "Nepal Standard Time": "Asia/Kathmandu",
    "Central Asia Standard Time": "Asia/Bishkek",  # UTC+6; Almaty moved to UTC+5 in 2024
    "Bangladesh Standard Time": "Asia/Dhaka",
    "Myanmar Standard Time": "Asia/Yangon",
    "SE Asia Standard Time": "Asia/Bangkok",
    "N. Central Asia Standard Time": "Asia/Novosibirsk",
    "North Asia Standard Time": "Asia/Krasnoyarsk",
    "China Standard Time": "Asia/Shanghai",
    "North Asia East Standard Time": "Asia/Irkutsk",
    "Singapore Standard Time": "Asia/Singapore",
    "W. Australia Standard Time": "Australia/Perth",
    "Taipei Standard Time": "Asia/Taipei",
    "Ulaanbaatar Standard Time": "Asia/Ulaanbaatar",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "Yakutsk Standard Time": "Asia/Yakutsk",
    "Cen. Australia Standard Time": "Australia/Adelaide",
    "AUS Central Standard Time": "Australia/Darwin",
    "E. Australia Standard Time": "Australia/Brisbane",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "West Pacific Standard Time": "Pacific/Port_Moresby",
    "Tasmania Standard Time": "Australia/Hobart",
    "Vladivostok Standard Time": "Asia/Vladivostok",
    "Central Pacific Standard Time": "Pacific/Guadalcanal",
    "UTC+12": "Etc/GMT-12",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Fiji Standard Time": "Pacific/Fiji",
    "UTC+13": "Etc/GMT-13",
    "Tonga Standard Time": "Pacific/Tongatapu",
    "Samoa Standard Time": "Pacific/Apia",
    "Line Islands Standard Time": "Pacific/Kiritimati",
    # Zones of a single region (CLDR has them too; without them such a time was read as UTC).
    "Alberta Standard Time": "America/Edmonton",
    "Aleutian Standard Time": "America/Adak",
    "Altai Standard Time": "Asia/Barnaul",
    "Astrakhan Standard Time": "Europe/Astrakhan",
    "Aus Central W. Standard Time": "Australia/Eucla",
    "Bahia Standard Time": "America/Bahia",
    "Bougainville Standard Time": "Pacific/Bougainville",
    "British Columbia Standard Time": "America/Vancouver",
    "Central Brazilian Standard Time": "America/Cuiaba",
    "Chatham Islands Standard Time": "Pacific/Chatham",
    "Easter Island Standard Time": "Pacific/Easter",
    "Greenland Standard Time": "America/Nuuk",
    "Lord Howe Standard Time": "Australia/Lord_Howe",
    "Magadan Standard Time": "Asia/Magadan",
    "Magallanes Standard Time": "America/Punta_Arenas",
    "Manitoba Standard Time": "America/Winnipeg",
    "Marquesas Standard Time": "Pacific/Marquesas",
    "Norfolk Standard Time": "Pacific/Norfolk",
    "North Korea Standard Time": "Asia/Pyongyang",
    "Omsk Standard Time": "Asia/Omsk",
    "Qyzylorda Standard Time": "Asia/Qyzylorda",
    "Russia Time Zone 10": "Asia/Srednekolymsk",
    "Russia Time Zone 11": "Asia/Kamchatka",
    "Russia Time Zone 3": "Europe/Samara",
    "Saint Pierre Standard Time": "America/Miquelon",
    "Sakhalin Standard Time": "Asia/Sakhalin",
    "Sao Tome Standard Time": "Africa/Sao_Tome",
    "Saratov Standard Time": "Europe/Saratov",
    "South Sudan Standard Time": "Africa/Juba",
    "Tocantins Standard Time": "America/Araguaina",
    "Tomsk Standard Time": "Asia/Tomsk",
    "Transbaikal Standard Time": "Asia/Chita",
    "Turks And Caicos Standard Time": "America/Grand_Turk",
    "Volgograd Standard Time": "Europe/Volgograd",
    "W. Mongolia Standard Time": "Asia/Hovd",
    "West Bank Standard Time": "Asia/Hebron",
    "Yukon Standard Time": "America/Whitehorse",
}
_WINDOWS_BY_LOWER: Final = {name.lower(): iana for name, iana in WINDOWS_TIME_ZONES.items()}
# Names that mean UTC in Graph/Exchange output besides the IANA ones ("tzone://Microsoft/Utc" is what
# Outlook writes for events created in UTC).
_UTC_NAMES: Final = frozenset({"", "utc", "z", "gmt", "etc/utc", "etc/gmt", "tzone://microsoft/utc"})


def _zone(name: str) -> tzinfo:
    """The tzinfo for a Graph time zone name. Unknown names (and custom zones such as
    "tzone://Microsoft/Custom", whose rules Graph does not give us) are treated as UTC: Bookings itself
    returns appointment times in UTC, so this path is only reached by odd input, and a time that is off
    by the zone's offset is better for a flow than no event at all."""
    key = name.strip()
    if key.lower() in _UTC_NAMES:
        return UTC
    iana = _WINDOWS_BY_LOWER.get(key.lower(), key)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def parse_graph_datetime(value: Any) -> datetime | None:
    """A Graph ``dateTimeTimeZone`` (``{"dateTime": "2026-11-25T09:00:00.0000000", "timeZone": "…"}``) or an
    ISO 8601 string to an aware UTC datetime; ``None`` when absent or unreadable.

    An explicit offset in ``dateTime`` (Bookings writes ``…Z``) wins over ``timeZone``: it is unambiguous.
    A naive wall time in a zone with a DST fold takes the first occurrence (zoneinfo's ``fold=0``)."""
    if isinstance(value, Mapping):
        raw, zone_name = value.get("dateTime"), value.get("timeZone")
    else:
        raw, zone_name = value, None
    if not isinstance(raw, str):
        return None
    try:
        # fromisoformat (3.11) reads Graph's seven fractional digits by truncating to microseconds.
        dt = datetime.fromisoformat(raw.strip())
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=_zone(zone_name if isinstance(zone_name, str) else ""))
        return dt.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def iso_utc(dt: datetime | None) -> str:
    """An aware datetime as the contract writes times (``2026-11-25T09:00:00Z``); "" for ``None``."""
    if dt is None:
        return ""
    # isoformat, not strftime: strftime("%Y") does not zero-pad years before 1000 on glibc.
    return dt.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


_DURATION = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_iso_duration(value: Any) -> timedelta | None:
    """Graph's ``Duration`` (xs:duration from a .NET TimeSpan: ``PT1H30M``, ``P1DT2H``, ``PT0.5S``) to a
    timedelta; ``None`` for anything else. Years and months are refused: their length is not fixed and
    Bookings never writes them. Negative durations are refused too (an appointment cannot have one)."""
    if not isinstance(value, str) or value in ("P", "PT") or value.endswith("T"):
        return None
    match = _DURATION.match(value.strip().upper())
    if match is None:
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    try:
        return timedelta(
            weeks=parts.get("w", 0), days=parts.get("d", 0), hours=parts.get("h", 0),
            minutes=parts.get("m", 0), seconds=parts.get("s", 0),
        )
    except (OverflowError, ValueError):
        return None
