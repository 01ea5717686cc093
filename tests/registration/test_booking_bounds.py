"""*Create an appointment* within sane bounds, checked before Graph is asked (fast, no I/O): the start within a
day ago .. two years ahead, at most 24 hours long, texts within their lengths and free of control characters and
lone surrogates, ids spelt as Graph spells them. Each refusal is ``InvalidRequest`` naming the field. (Issue 25: a
probe booking in year 1, or 100 years long, reached Graph.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.contracts.errors import ApiError
from shared.endpoints.appointments import (
    BOOKING_AHEAD,
    BOOKING_PAST,
    MAX_DURATION,
    TEXT_LIMITS,
    parse_new_appointment,
)

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def booking(**fields: object) -> bytes:
    return json.dumps({"serviceId": "svc-1", "startDateTime": z(NOW + timedelta(days=3)), **fields}).encode()


def refusal(body: bytes) -> str:
    with pytest.raises(ApiError) as refused:
        parse_new_appointment(body, NOW)
    assert refused.value.code == "InvalidRequest"
    return refused.value.details["reason"]


@pytest.mark.parametrize(("fields", "named"), [
    ({"startDateTime": "0001-01-01T00:00:00Z"}, "startDateTime"),
    ({"startDateTime": "9999-12-31T23:59:59Z"}, "startDateTime"),
    ({"startDateTime": z(NOW - BOOKING_PAST - timedelta(seconds=1))}, "startDateTime"),
    ({"startDateTime": z(NOW + BOOKING_AHEAD + timedelta(seconds=1))}, "startDateTime"),
    ({"endDateTime": z(NOW + timedelta(days=3) + MAX_DURATION + timedelta(seconds=1))}, "endDateTime"),
    ({"endDateTime": z(NOW + timedelta(days=3 + 365 * 100))}, "endDateTime"),  # a 100-year length
    ({"endDateTime": z(NOW + timedelta(days=3))}, "endDateTime"),  # no length at all
    ({"customerName": "x" * (TEXT_LIMITS["customerName"] + 1)}, "customerName"),
    ({"customerEmail": "a" * 250 + "@b.test"}, "customerEmail"),
    ({"customerNotes": "x" * (TEXT_LIMITS["customerNotes"] + 1)}, "customerNotes"),
    ({"customerName": "Ada\ud800"}, "customerName"),  # a lone surrogate (json.dumps writes the \\ud800 escape)
    ({"serviceNotes": "\udfff"}, "serviceNotes"),
    ({"customerName": "Ada\nLovelace"}, "customerName"),  # one line only
    ({"customerPhone": "555\x00"}, "customerPhone"),
    ({"additionalInformation": "bell\x07"}, "additionalInformation"),
    ({"customerTimeZone": "Tokyo\x85"}, "customerTimeZone"),  # C1 control
    ({"serviceId": "../services"}, "serviceId"),
    ({"staffMemberId": "a/b"}, "staffMemberId"),
    ({"staffMemberIds": ["ok", "a?b"]}, "staffMemberId"),
])
def test_what_is_out_of_bounds_is_refused_naming_the_field(fields: dict, named: str) -> None:
    assert named in refusal(booking(**fields))


def test_what_is_within_bounds_is_taken() -> None:
    start, end = NOW - BOOKING_PAST, NOW - BOOKING_PAST + MAX_DURATION
    new = parse_new_appointment(booking(startDateTime=z(start), endDateTime=z(end),
                                        customerNotes="line one\r\nline two\tindented",
                                        customerName="今日は 😀", customerEmail="ada@example.test"), NOW)
    assert (new["start"], new["end"]) == (start, end)
    assert new["customerNotes"] == "line one\r\nline two\tindented" and new["customerName"] == "今日は 😀"
    assert parse_new_appointment(booking(startDateTime=z(NOW + BOOKING_AHEAD)), NOW)["start"] == NOW + BOOKING_AHEAD
    for name, limit in TEXT_LIMITS.items():
        assert len(parse_new_appointment(booking(**{name: "é" * limit}), NOW)[name]) == limit
    assert parse_new_appointment(booking(staffMemberIds=[]), NOW)["staffMemberIds"] == []
