"""What the actions and the triggers' filters accept, before any Graph call (fast, no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.contracts.errors import ApiError
from shared.endpoints.appointments import MAX_TEXT_CHARS, parse_new_appointment
from shared.endpoints.flow_webhooks import MAX_FILTER_IDS, parse_registration_body

NOW = datetime(2030, 5, 1, tzinfo=UTC)  # the bookings below are days ahead of it


def parse(**body: object) -> dict:
    return dict(parse_new_appointment(json.dumps(body).encode(), NOW))


def test_a_booking_needs_a_service_and_a_start_and_takes_one_or_several_staff() -> None:
    new = parse(serviceId=" svc ", startDateTime="2030-05-06T09:00:00+02:00", staffMemberId="s1",
                customerName=" Ada ", customerEmail="ada@example.test")
    assert new["serviceId"] == "svc" and new["start"] == datetime(2030, 5, 6, 7, 0, tzinfo=UTC)
    assert new["end"] is None and new["staffMemberIds"] == ["s1"] and new["customerName"] == "Ada"
    assert parse(serviceId="svc", startDateTime="2030-05-06T09:00:00", staffMemberIds=["a", "b", "a"])[
        "staffMemberIds"] == ["a", "b"]  # no offset: UTC; duplicates once
    assert parse(serviceId="svc", startDateTime="2030-05-06T09:00:00Z")["start"].tzinfo is not None


@pytest.mark.parametrize("body", [
    {}, {"serviceId": "svc"}, {"startDateTime": "2030-05-06T09:00:00Z"},
    {"serviceId": 7, "startDateTime": "2030-05-06T09:00:00Z"},
    {"serviceId": "svc", "startDateTime": "tomorrow"},
    {"serviceId": "svc", "startDateTime": "2030-05-06T09:00:00Z", "endDateTime": "2030-05-06T08:00:00Z"},
    {"serviceId": "svc", "startDateTime": "2030-05-06T09:00:00Z", "staffMemberId": ["ok", 3]},
    {"serviceId": "svc", "startDateTime": "2030-05-06T09:00:00Z", "customerNotes": "x" * (MAX_TEXT_CHARS + 1)},
    {"serviceId": "svc", "startDateTime": "2030-05-06T09:00:00Z", "customerEmail": {"not": "text"}},
])
def test_what_cannot_be_booked_is_an_invalid_request(body: dict) -> None:
    with pytest.raises(ApiError) as refused:
        parse(**body)
    assert refused.value.code == "InvalidRequest"


@pytest.mark.parametrize("raw", [b"", b"[]", b"not json", b"\xff"])
def test_a_body_that_is_no_json_object_is_an_invalid_request(raw: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        parse_new_appointment(raw)
    assert refused.value.code == "InvalidRequest"


def test_an_oversized_body_is_refused_as_too_large() -> None:
    with pytest.raises(ApiError) as refused:
        parse_new_appointment(b"{" + b" " * 70_000 + b"}")
    assert refused.value.code == "PayloadTooLarge"


def registration(**fields: object) -> bytes:
    return json.dumps({"notificationURL": "https://a.logic.azure.com/x", **fields}).encode()


def test_trigger_filters_are_one_id_several_or_none() -> None:
    plain = parse_registration_body(registration(), "AppointmentCreated")
    assert plain.service_ids == () and plain.staff_member_ids == ()
    one = parse_registration_body(registration(serviceId="svc-1", staffMemberId=""), "AppointmentCreated")
    assert one.service_ids == ("svc-1",) and one.staff_member_ids == ()
    several = parse_registration_body(registration(serviceId="svc-1, svc-2,svc-1", staffMemberIds=["s1", "s2"]),
                                      "AppointmentUpdated")
    assert several.service_ids == ("svc-1", "svc-2") and several.staff_member_ids == ("s1", "s2")
    nested = parse_registration_body(json.dumps({"webhook": {"notification_url": "https://a.logic.azure.com/x",
                                                             "service_id": "svc-3"}}).encode(), "AppointmentDeleted")
    assert nested.service_ids == ("svc-3",)


@pytest.mark.parametrize("value", [7, {"id": "x"}, ["ok", 7], ",".join(f"s{i}" for i in range(MAX_FILTER_IDS + 1)),
                                   "x" * 101])
def test_a_filter_that_is_no_list_of_ids_is_an_invalid_request(value: object) -> None:
    with pytest.raises(ApiError) as refused:
        parse_registration_body(registration(serviceId=value), "AppointmentCreated")
    assert refused.value.code == "InvalidRequest"
