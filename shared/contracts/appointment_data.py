"""Graph ``bookingAppointment`` JSON -> the connector's ``AppointmentData`` payload (docs/architecture.md).

This module owns the payload contract flows see: the TypedDicts below carry exactly the field names of
the connector definition (``connector/apiDefinition.swagger.json``), and ``to_appointment_data`` is the
only place that fills them. It also owns ``content_fingerprint``, the reconcile worker's answer to
"did this appointment change in a way a flow maker would care about?".

Both are pure: no I/O, no clock, no logging. The caller (the reconcile worker) reads the appointment by
id and the business's staff, services and custom questions from Graph and passes them in.

Rules
-----
* **1:1 vs group.** An appointment is a group appointment when its ``maximumAttendeesCount`` (or, if the
  appointment lacks it, its service's) is greater than 1, or when it has several customers. 1:1
  appointments fill the top-level customer fields (``CustomerName``, ``CustomerEmail``, ``CustomerPhone``,
  ``CustomerId``, ``CustomerNotes``, ``CustomerTimeZone``, ``CustomerLocation``, ``CustomQuestionAnswers``)
  from their customer *and* list that customer in ``Customers``. Group appointments list every customer,
  with notes and answers, in ``Customers`` only and leave the top-level customer fields empty — as
  Microsoft's connector does (its FAQ: "group bookings use the customers array"), so a flow never
  mistakes the first of many customers for "the" customer.
* **Fill what Microsoft leaves empty**: customer notes, service notes, additional information and the
  custom question answers are filled for 1:1 appointments too; question text, options and "required"
  come from the answer itself, else from the business's custom questions and the service.
  ``CancelReason`` is whatever the caller knows (Graph keeps no cancellation reason).
* **Notes are the appointment's own.** ``ServiceNotes`` is the appointment's ``serviceNotes`` ("notes from
  a bookingStaffMember", returned only when the appointment is read by id) and ``AdditionalInfo`` its
  ``additionalInformation``; "" when Graph gives none. The service's notes or description never stand
  in: a flow must not report text as written for this appointment that nobody wrote for it.
* **Times** are ISO 8601 UTC (``2026-11-25T09:00:00Z``), converted from Graph's ``dateTimeTimeZone``
  (UTC, IANA names, and Windows names such as "Tokyo Standard Time" through ``WINDOWS_TIME_ZONES``).
  ``Duration`` is whole minutes, from start/end, else from Graph's ISO 8601 ``duration``.
* **Ids.** ``AppointmentId`` is Graph's appointment ``id``: unique, the same on the Created, Updated and
  Cancelled events of one appointment, and the id Graph and our cancel route take. ``SelfServiceAppointmentId``
  is Graph's ``selfServiceAppointmentId`` exactly as Graph returns it ("" only when Graph gives none).
  Microsoft documents it as a second tracking id, there when the customer booked on the scheduling page
  rather than a staff member on the customer's behalf
  (https://learn.microsoft.com/en-us/graph/api/resources/bookingappointment); for appointments staff
  created Graph returns the all-zero GUID (the response example of
  https://learn.microsoft.com/en-us/graph/api/bookingappointment-get). ``Id`` (deprecated in the contract:
  "use SelfServiceAppointmentId") has the same value. Neither tells appointments apart; ``AppointmentId``
  does. Payloads stored before ``AppointmentId`` existed are brought up to this by ``upgrade_stored_payload``.
* **What changed** (ours, beyond Microsoft's contract): an Updated event's ``ChangedFields`` names the payload
  fields whose values differ from the previous state (``CHANGE_TRACKED``; staff and customers compared as sets)
  and ``Previous`` holds the earlier times, staff and service, so a flow can tell a reschedule from a note
  edit (``with_change_details``). Created and Cancelled events, and the actions' answers, leave them empty.
  ``IsTest`` is true only in the sample a flow maker asks for (``sample_appointment_data``).
* **Robustness.** Unknown Graph fields are ignored; missing, null or wrongly typed optional ones become
  ``""`` / ``[]`` / ``0`` / ``False`` — never an exception. (The connector schema declares no nullable
  field, so we never emit ``null``.)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CHANGE_TRACKED",
    "FINGERPRINT_VERSION",
    "WINDOWS_TIME_ZONES",
    "AppointmentData",
    "CustomQuestion",
    "CustomerData",
    "CustomerLocation",
    "PhysicalAddress",
    "PreviousValues",
    "StaffMember",
    "content_fingerprint",
    "is_current_payload",
    "is_group_appointment",
    "parse_graph_datetime",
    "parse_iso_duration",
    "sample_appointment_data",
    "to_appointment_data",
    "upgrade_stored_payload",
    "with_change_details",
]


# ---- the contract (names are what flows reference: never rename) ---------------------------------


class PhysicalAddress(TypedDict):
    City: str
    CountryOrRegion: str
    PostalCode: str
    State: str
    Street: str


class CustomerLocation(TypedDict):
    # The contract marks DisplayName optional; we always send it ("" when unknown) so a flow's reference to it
    # never resolves to "property does not exist".
    DisplayName: str
    PhysicalAddress: PhysicalAddress


class CustomQuestion(TypedDict):
    Answer: str
    AnswerOptions: list[str]
    IsRequired: bool
    Question: str
    QuestionID: str
    SelectedOptions: list[int]  # indexes into AnswerOptions


class CustomerData(TypedDict):
    Email: str
    Id: str
    Location: CustomerLocation
    Name: str
    Notes: str
    TimeZone: str
    Answers: list[CustomQuestion]


class StaffMember(TypedDict):
    DisplayName: str
    EmailAddress: str
    Id: str


class PreviousValues(TypedDict):
    """An Updated event's earlier times, staff and service (ours); all empty on other events."""

    Duration: int
    EndTime: str
    ServiceId: str
    ServiceName: str
    StaffMembers: list[StaffMember]
    StartTime: str


class AppointmentData(TypedDict):
    AdditionalInfo: str
    AppointmentId: str  # our addition to Microsoft's schema: Graph's appointment id
    CancelReason: str
    ChangedFields: list[str]  # ours: what an Updated event changed
    IsTest: bool  # ours: true only in a sample sent on request
    CustomerEmail: str
    CustomerId: str
    CustomerLocation: CustomerLocation
    CustomerName: str
    CustomerNotes: str
    CustomerPhone: str
    CustomerTimeZone: str
    CustomQuestionAnswers: list[CustomQuestion]
    Customers: list[CustomerData]
    Duration: int
    EndTime: str
    FilledAttendeesCount: int
    Id: str
    IsSMSNotificationsEnabled: bool
    JoinWebURL: str
    MaxAttendeesCount: int
    Previous: PreviousValues  # ours: an Updated event's earlier values
    SelfServiceAppointmentId: str
    ServiceId: str
    ServiceName: str
    ServiceNotes: str
    StaffMembers: list[StaffMember]
    StartTime: str
    TrackingData: str


# ---- time zones ------------------------------------------------------------------------------------

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


def _iso_utc(dt: datetime | None) -> str:
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


# ---- small readers: Graph JSON is trusted for shape only as far as these go -----------------------

_INT32_MAX: Final = 2**31 - 1  # the connector declares int32 fields
_ZERO_GUID: Final = "00000000-0000-0000-0000-000000000000"


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return max(0, min(value, _INT32_MAX))
    if isinstance(value, float) and value == value and abs(value) != float("inf"):  # not NaN/inf
        return max(0, min(int(value), _INT32_MAX))
    if isinstance(value, str) and value.strip().isdigit():
        return min(int(value.strip()), _INT32_MAX)
    return None


def _bool(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in _list(value) if isinstance(item, Mapping)]


def _by_id(items: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {_str(item.get("id")): item for item in items if isinstance(item, Mapping) and _str(item.get("id"))}


def _first_str(*values: Any) -> str:
    for value in values:
        text = _str(value)
        if text:
            return text
    return ""


# ---- pieces --------------------------------------------------------------------------------------


def _location(value: Any) -> CustomerLocation:
    """Graph ``location`` (``displayName``, ``address`` = ``physicalAddress``) to the contract's shape."""
    location = _dict(value)
    address = _dict(location.get("address"))
    return {
        "DisplayName": _str(location.get("displayName")),
        "PhysicalAddress": {
            "City": _str(address.get("city")),
            "CountryOrRegion": _str(address.get("countryOrRegion")),
            "PostalCode": _str(address.get("postalCode")),
            "State": _str(address.get("state")),
            "Street": _str(address.get("street")),
        },
    }


def _selected_indexes(selected: list[Any], options: list[str], answer: str) -> list[int]:
    """Graph documents ``selectedOptions`` as the chosen option *texts*; the contract wants their indexes.
    Integers are taken as indexes already (some producers write those — our Graph sandbox does). When
    nothing is selected but the free-text answer is exactly one option (radio buttons answered through
    ``answer``), that option."""
    indexes: list[int] = []
    for item in selected:
        index: int | None = None
        if isinstance(item, str) and item in options:
            index = options.index(item)
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(options):
            index = item
        if index is not None and index not in indexes:
            indexes.append(index)
    if not indexes and not selected and answer in options:
        indexes.append(options.index(answer))
    return indexes


def _question(
    answer: Mapping[str, Any], questions: Mapping[str, Mapping[str, Any]], required: Mapping[str, bool]
) -> CustomQuestion:
    qid = _str(answer.get("questionId"))
    known = questions.get(qid, {})
    # The answer carries the question as it was when the customer answered (Graph: "the properties of the
    # custom question at the time of creation of the appointment"), so its options match its selection;
    # the business's current question only fills what the answer lacks.
    options = [_str(o) for o in _list(answer.get("answerOptions")) if isinstance(o, str)] or [
        _str(o) for o in _list(known.get("answerOptions")) if isinstance(o, str)
    ]
    text = _str(answer.get("answer"))
    indexes = _selected_indexes(_list(answer.get("selectedOptions")), options, text)
    if not text and indexes:
        # Graph fills ``answer`` only for text questions; a flow wants the choice as text too.
        text = ", ".join(options[i] for i in indexes)
    is_required = answer.get("isRequired")
    return {
        "Answer": text,
        "AnswerOptions": options,
        "IsRequired": is_required if isinstance(is_required, bool) else required.get(qid, False),
        "Question": _first_str(answer.get("question"), known.get("displayName")),
        "QuestionID": qid,
        "SelectedOptions": indexes,
    }


def _customer(
    info: Mapping[str, Any], questions: Mapping[str, Mapping[str, Any]], required: Mapping[str, bool]
) -> CustomerData:
    return {
        "Email": _str(info.get("emailAddress")),
        "Id": _str(info.get("customerId")),
        "Location": _location(info.get("location")),
        "Name": _str(info.get("name")),
        "Notes": _str(info.get("notes")),
        "TimeZone": _str(info.get("timeZone")),
        "Answers": [_question(a, questions, required) for a in _dicts(info.get("customQuestionAnswers"))],
    }


def _customer_infos(appointment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    customers = _dicts(appointment.get("customers"))
    if customers:
        return customers
    # Older shapes (and Graph's deprecated single-customer properties, still in the JSON) carry the one
    # customer at the top level; use them when the collection is missing.
    legacy = {
        "customerId": appointment.get("customerId"),
        "name": appointment.get("customerName"),
        "emailAddress": appointment.get("customerEmailAddress"),
        "phone": appointment.get("customerPhone"),
        "notes": appointment.get("customerNotes"),
        "location": appointment.get("customerLocation"),
        "timeZone": appointment.get("customerTimeZone"),
    }
    if any(_str(legacy[k]) for k in ("customerId", "name", "emailAddress", "phone")):
        return [legacy]
    return []


def _staff_member(staff_id: str, staff: Mapping[str, Mapping[str, Any]]) -> StaffMember:
    # An id we cannot resolve (staff member removed since, or the lookup failed) still names the host.
    member = staff.get(staff_id, {})
    return {
        "DisplayName": _str(member.get("displayName")),
        "EmailAddress": _str(member.get("emailAddress")),
        "Id": staff_id,
    }


def _max_attendees(appointment: Mapping[str, Any], service: Mapping[str, Any]) -> int:
    value = _int(appointment.get("maximumAttendeesCount"))
    if not value:
        value = _int(service.get("maximumAttendeesCount"))
    return value or 0


def is_group_appointment(appointment: Mapping[str, Any], service: Mapping[str, Any] | None = None) -> bool:
    """True when the appointment (or, lacking the field, its service) takes more than one customer, or when
    it has more than one customer whatever the counts say (then there is no "the" customer)."""
    appt = _dict(appointment)
    return _max_attendees(appt, _dict(service)) > 1 or len(_customer_infos(appt)) > 1


def _duration_minutes(start: datetime | None, end: datetime | None, raw: Any) -> int:
    delta = end - start if start is not None and end is not None else None
    if delta is None or delta < timedelta(0):
        delta = parse_iso_duration(raw)
    if delta is None:
        return 0
    # round(), not floor: Graph's seven-digit fractions can leave 29:59.9999999 for a 30-minute slot.
    return max(0, min(round(delta.total_seconds() / 60), _INT32_MAX))


# ---- the mapping -----------------------------------------------------------------------------------


def to_appointment_data(
    appointment: Mapping[str, Any],
    *,
    services: Sequence[Mapping[str, Any]] = (),
    staff: Sequence[Mapping[str, Any]] = (),
    questions: Sequence[Mapping[str, Any]] = (),
    cancel_reason: str = "",
) -> AppointmentData:
    """Map a Graph ``bookingAppointment`` (as ``GET …/appointments/{id}`` returns it) to ``AppointmentData``.

    ``services``, ``staff`` and ``questions`` are the business's ``bookingService``, ``bookingStaffMember``
    and ``bookingCustomQuestion`` objects as Graph lists them (all of them, or only the relevant ones): they
    are looked up by ``serviceId``, ``staffMemberIds`` and ``questionId``. Lists rather than the one service
    so the caller can read each collection once per mailbox and cannot pair an appointment with the wrong
    service. ``cancel_reason`` is the reason we know for a cancellation (Graph keeps none).
    """
    appt = _dict(appointment)
    service_id = _str(appt.get("serviceId"))
    service = _by_id(_dicts(list(services or ()))).get(service_id, {})
    staff_by_id = _by_id(_dicts(list(staff or ())))
    questions_by_id = _by_id(_dicts(list(questions or ())))
    required = {
        _str(q.get("questionId")): q.get("isRequired") is True for q in _dicts(service.get("customQuestions"))
    }

    # v1.0 returns startDateTime/endDateTime; the resource page's JSON sample says start/end. Read both.
    start = parse_graph_datetime(appt.get("startDateTime") or appt.get("start"))
    end = parse_graph_datetime(appt.get("endDateTime") or appt.get("end"))
    infos = _customer_infos(appt)
    customers = [_customer(info, questions_by_id, required) for info in infos]
    max_attendees = _max_attendees(appt, service)
    filled = _int(appt.get("filledAttendeesCount"))
    # As Graph returns it: the all-zero GUID for appointments staff created, never replaced by our id.
    self_service_id = _str(appt.get("selfServiceAppointmentId"))
    # The appointment's own notes (GET by id has them), never the service's: see "Notes" above. Only a
    # string counts (as always: content_fingerprint hashes these, and its v1 values must not move).
    service_notes, additional = appt.get("serviceNotes"), appt.get("additionalInformation")

    data: AppointmentData = {
        "AdditionalInfo": additional if isinstance(additional, str) else "",
        "AppointmentId": _str(appt.get("id")),
        "CancelReason": _str(cancel_reason),
        "ChangedFields": [],
        "CustomerEmail": "",
        "CustomerId": "",
        "CustomerLocation": _location(None),
        "CustomerName": "",
        "CustomerNotes": "",
        "CustomerPhone": "",
        "CustomerTimeZone": "",
        "CustomQuestionAnswers": [],
        "Customers": customers,
        "Duration": _duration_minutes(start, end, appt.get("duration")),
        "EndTime": _iso_utc(end),
        "FilledAttendeesCount": filled if filled is not None else len(customers),
        "Id": self_service_id,
        "IsSMSNotificationsEnabled": _bool(appt.get("smsNotificationsEnabled")),
        "IsTest": False,
        "JoinWebURL": _str(appt.get("joinWebUrl")),
        "MaxAttendeesCount": max_attendees,
        "Previous": _no_previous(),
        "SelfServiceAppointmentId": self_service_id,
        "ServiceId": service_id,
        "ServiceName": _first_str(appt.get("serviceName"), service.get("displayName")),
        "ServiceNotes": service_notes if isinstance(service_notes, str) else "",
        "StaffMembers": [
            _staff_member(sid, staff_by_id) for sid in (_str(s) for s in _list(appt.get("staffMemberIds"))) if sid
        ],
        "StartTime": _iso_utc(start),
        # Microsoft's "campaign tracking data" has no Graph property we can read; empty, as the contract allows.
        "TrackingData": "",
    }
    if customers and not is_group_appointment(appt, service):
        one, info = customers[0], infos[0]
        data.update(
            CustomerEmail=one["Email"],
            CustomerId=one["Id"],
            CustomerLocation=one["Location"],
            CustomerName=one["Name"],
            CustomerNotes=one["Notes"],
            CustomerPhone=_str(info.get("phone")),
            # The appointment's customerTimeZone is the one Bookings shows the booking in; the customer's
            # own timeZone is the fallback.
            CustomerTimeZone=_first_str(appt.get("customerTimeZone"), one["TimeZone"]),
            CustomQuestionAnswers=one["Answers"],
        )
    return data


# ---- payloads stored by earlier versions ------------------------------------------------------------


def is_current_payload(payload: Mapping[str, Any]) -> bool:
    """Whether a stored payload (a snapshot's) was mapped by this version: it has ``AppointmentId``, which
    every payload has had since the ids and notes have been Graph's own."""
    return "AppointmentId" in payload


def upgrade_stored_payload(payload: Mapping[str, Any], appointment_id: str) -> dict[str, Any]:
    """A payload stored by an earlier version (a snapshot's, which becomes the Cancelled event), in today's
    contract; a current one comes back unchanged (as a copy).

    An earlier payload lacks ``AppointmentId``: it is the appointment id the row is stored under. And that
    version put the Graph id into ``SelfServiceAppointmentId`` and ``Id`` when Graph's value was the
    all-zero GUID or missing (appointments staff created); such a value (a Graph id, never a GUID) becomes
    the zero GUID, what Graph returns for them. Its ``ServiceNotes``/``AdditionalInfo`` may be the service's
    text standing in for none of the appointment's own; nothing stored tells which, so they stay (the next
    read of the appointment by id replaces the payload)."""
    data = dict(payload)
    # Fields added since (all optional in the contract) get their empty values, so a flow's reference to
    # them resolves on every event.
    for name, empty in (("ChangedFields", []), ("IsTest", False), ("Previous", _no_previous())):
        data.setdefault(name, empty)
    if is_current_payload(data):
        return data
    data["AppointmentId"] = appointment_id
    if appointment_id and data.get("SelfServiceAppointmentId") == appointment_id:
        data["SelfServiceAppointmentId"] = _ZERO_GUID
        if data.get("Id") == appointment_id:
            data["Id"] = _ZERO_GUID
    return data


# ---- what changed, and the sample ----------------------------------------------------------------------

# The payload fields an Updated event's ChangedFields may name: what a flow maker sees of the appointment
# (ids, the cancel reason and our bookkeeping fields are not changes of it).
CHANGE_TRACKED: Final = (
    "StartTime", "EndTime", "Duration", "StaffMembers", "ServiceId", "ServiceName", "Customers", "CustomerName",
    "CustomerEmail", "CustomerPhone", "CustomerNotes", "CustomerTimeZone", "CustomerLocation", "CustomerId",
    "CustomQuestionAnswers", "ServiceNotes", "AdditionalInfo", "JoinWebURL", "MaxAttendeesCount",
    "FilledAttendeesCount", "IsSMSNotificationsEnabled",
)


def _no_previous() -> PreviousValues:
    return {"Duration": 0, "EndTime": "", "ServiceId": "", "ServiceName": "", "StaffMembers": [], "StartTime": ""}


def _comparable(name: str, value: Any) -> Any:
    """A field's value as compared: staff by id and customers as sets (Graph's order is not meaningful)."""
    if name == "StaffMembers":
        return sorted({_str(_dict(m).get("Id")) for m in _list(value)})
    if isinstance(value, list):
        return sorted(json.dumps(v, sort_keys=True, ensure_ascii=False) for v in value)
    return value


def with_change_details(payload: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``payload`` as an event carries it: with ``previous`` (the appointment's last state, an Updated event),
    ``ChangedFields`` names the ``CHANGE_TRACKED`` fields that differ and ``Previous`` holds the earlier times,
    staff and service; without it (Created, Cancelled) both are empty."""
    data = dict(payload)
    data["ChangedFields"], data["Previous"] = [], _no_previous()
    if previous is not None:
        before = dict(previous)
        data["ChangedFields"] = [name for name in CHANGE_TRACKED if name in before
                                 and _comparable(name, before.get(name)) != _comparable(name, data.get(name))]
        data["Previous"] = {
            "Duration": _int(before.get("Duration")) or 0, "EndTime": _str(before.get("EndTime")),
            "ServiceId": _str(before.get("ServiceId")), "ServiceName": _str(before.get("ServiceName")),
            "StaffMembers": [{"DisplayName": _str(m.get("DisplayName")), "EmailAddress": _str(m.get("EmailAddress")),
                              "Id": _str(m.get("Id"))} for m in _dicts(before.get("StaffMembers"))],
            "StartTime": _str(before.get("StartTime")),
        }
    return data


def sample_appointment_data(change_type: str, now: datetime) -> AppointmentData:
    """A made-up appointment, every field filled, ``IsTest`` true: what *Send a test event to this flow* posts,
    so a flow maker sees the dynamic content without booking anything. ``change_type`` (Created, Updated,
    Cancelled) decides whether it carries a cancel reason or change details."""
    start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    location: CustomerLocation = {"DisplayName": "Customer's home", "PhysicalAddress": {
        "City": "Seattle", "CountryOrRegion": "USA", "PostalCode": "98101", "State": "WA", "Street": "1 Sample St"}}
    answer: CustomQuestion = {"Answer": "English", "AnswerOptions": ["English", "Japanese"], "IsRequired": True,
                              "Question": "Preferred language (sample)", "QuestionID": _ZERO_GUID,
                              "SelectedOptions": [0]}
    staff: StaffMember = {"DisplayName": "Sample staff member", "EmailAddress": "staff@example.invalid",
                          "Id": _ZERO_GUID}
    customer: CustomerData = {"Email": "customer@example.invalid", "Id": _ZERO_GUID, "Location": location,
                              "Name": "Sample customer", "Notes": "A note from the customer (sample)",
                              "TimeZone": "America/Los_Angeles", "Answers": [answer]}
    data: AppointmentData = {
        "AdditionalInfo": "Information for the customer (sample)", "AppointmentId": "sample-appointment-id",
        "CancelReason": "Cancelled for the test (sample)" if change_type == "Cancelled" else "",
        "ChangedFields": [], "CustomerEmail": customer["Email"], "CustomerId": customer["Id"],
        "CustomerLocation": location, "CustomerName": customer["Name"], "CustomerNotes": customer["Notes"],
        "CustomerPhone": "+1 206 555 0100", "CustomerTimeZone": customer["TimeZone"],
        "CustomQuestionAnswers": [answer], "Customers": [customer], "Duration": 30,
        "EndTime": _iso_utc(start + timedelta(minutes=30)), "FilledAttendeesCount": 1, "Id": _ZERO_GUID,
        "IsSMSNotificationsEnabled": False, "IsTest": True, "JoinWebURL": "", "MaxAttendeesCount": 1,
        "Previous": _no_previous(), "SelfServiceAppointmentId": _ZERO_GUID, "ServiceId": _ZERO_GUID,
        "ServiceName": "Sample service", "ServiceNotes": "A note for the staff (sample)", "StaffMembers": [staff],
        "StartTime": _iso_utc(start), "TrackingData": "",
    }
    if change_type == "Updated":
        data["ChangedFields"] = ["StartTime", "EndTime"]
        data["Previous"] = {"Duration": 30, "EndTime": _iso_utc(start - timedelta(minutes=30)), "ServiceId": _ZERO_GUID,
                            "ServiceName": "Sample service", "StaffMembers": [staff],
                            "StartTime": _iso_utc(start - timedelta(hours=1))}
    return data


# ---- change detection --------------------------------------------------------------------------------

# Snapshots store fingerprints: a new version makes every stored one differ, and each appointment the next
# reconcile reads by id then looks Updated. Change it only with what counts as a change. Ids are not hashed
# (an appointment's never change), and ServiceNotes/AdditionalInfo are hashed as the appointment has them
# (content_fingerprint maps without the business's services, so the service's text never stood in there):
# neither AppointmentId nor dropping the service's notes from payloads changed any v1 fingerprint.
FINGERPRINT_VERSION: Final = "v1"


def content_fingerprint(appointment: Mapping[str, Any]) -> str:
    """A stable hash of what a flow maker would care about in an appointment: times, staff, customers with
    their notes, answers and locations, service, notes, additional information, online link and service
    location. Bookkeeping (``lastUpdatedDateTime``, ``createdDateTime``, ``@odata.*``, etags) and fields no
    flow sees are left out, so a touch that changes nothing visible is a no-op, not an Updated event.

    Normalised so equal content hashes equal: times compared as UTC instants (``…Z`` vs ``+09:00`` vs a
    zone name), null = missing = "", staff and customers as sets (Graph's order is not meaningful), answers
    by question. Compare fingerprints of appointments read the same way (``GET`` by id): listings omit
    customers and notes. The result starts with ``FINGERPRINT_VERSION`` so a future change of this
    function can be told apart from a change of the appointment.
    """
    appt = _dict(appointment)
    # Reuse the mapping (without lookups: names of staff or questions changing in the business is not a
    # change of this appointment) so "what counts" cannot drift from "what a flow sees".
    data = to_appointment_data(appt)
    customers = [
        {**c, "Answers": sorted(c["Answers"], key=lambda a: (a["QuestionID"], a["Question"], a["Answer"]))}
        for c in data["Customers"]
    ]
    infos = _customer_infos(appt)
    customer_phones = sorted(_str(info.get("phone")) for info in infos)
    # Selections as Graph wrote them: without the business's questions the mapping cannot turn option texts
    # into indexes, and a changed choice must still count.
    selections = sorted(
        [_str(info.get("customerId")), _str(a.get("questionId")),
         sorted(_str(o) for o in _list(a.get("selectedOptions")))]
        for info in infos
        for a in _dicts(info.get("customQuestionAnswers"))
    )
    content = {
        "start": data["StartTime"],
        "end": data["EndTime"],
        "duration": data["Duration"],
        "staff": sorted({m["Id"] for m in data["StaffMembers"]}),
        "customers": sorted(customers, key=lambda c: json.dumps(c, sort_keys=True)),
        "customerPhones": customer_phones,
        "selections": selections,
        "customerTimeZone": _str(appt.get("customerTimeZone")),
        "serviceId": data["ServiceId"],
        "serviceName": data["ServiceName"],
        "serviceNotes": data["ServiceNotes"],
        "additionalInformation": data["AdditionalInfo"],
        "joinWebUrl": data["JoinWebURL"],
        "isLocationOnline": _bool(appt.get("isLocationOnline")),
        "serviceLocation": _location(appt.get("serviceLocation")),
        "maximumAttendeesCount": data["MaxAttendeesCount"],
        "smsNotificationsEnabled": data["IsSMSNotificationsEnabled"],
    }
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{FINGERPRINT_VERSION}:{hashlib.sha256(canonical.encode()).hexdigest()}"
