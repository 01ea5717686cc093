"""What an Updated event says changed (``with_change_details``), the test event's sample, and the filter keys an
event is matched on: pure functions, against the connector's schema made strict."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from shared.contracts.appointment_changes import (
    CHANGE_TRACKED,
    sample_appointment_data,
    upgrade_stored_payload,
    with_change_details,
)
from shared.contracts.appointment_data import to_appointment_data
from shared.records.flows import Flow
from shared.records.outbox import filter_properties
from tests.appointment_data.conftest import assert_valid

EMPTY = {"Duration": 0, "EndTime": "", "ServiceId": "", "ServiceName": "", "StaffMembers": [], "StartTime": ""}


def appointment(**changes: object) -> dict:
    base = {
        "id": "AAMk1", "serviceId": "svc-1", "serviceName": "Bike fitting", "staffMemberIds": ["s1", "s2"],
        "startDateTime": {"dateTime": "2030-05-06T09:00:00.0000000Z", "timeZone": "UTC"},
        "endDateTime": {"dateTime": "2030-05-06T09:30:00.0000000Z", "timeZone": "UTC"},
        "serviceNotes": "bring the bike", "maximumAttendeesCount": 1,
        "customers": [{"name": "Ada", "emailAddress": "ada@example.test", "notes": "first visit"}],
    }
    base.update(changes)
    return base


STAFF = [{"id": "s1", "displayName": "One", "emailAddress": "one@x.test"},
         {"id": "s2", "displayName": "Two", "emailAddress": "two@x.test"}]


def payload(**changes: object) -> dict:
    return dict(to_appointment_data(appointment(**changes), staff=STAFF))


def test_a_mapped_appointment_has_empty_change_details_and_is_no_test() -> None:
    data = payload()
    assert_valid(data)
    assert data["ChangedFields"] == [] and data["Previous"] == EMPTY and data["IsTest"] is False


def test_a_reschedule_names_the_times_and_keeps_the_earlier_ones() -> None:
    before = payload()
    after = payload(startDateTime={"dateTime": "2030-05-06T11:00:00Z", "timeZone": "UTC"},
                    endDateTime={"dateTime": "2030-05-06T11:30:00Z", "timeZone": "UTC"})
    event = with_change_details(after, before)
    assert_valid(event)
    assert event["ChangedFields"] == ["StartTime", "EndTime"]
    assert event["Previous"] == {"Duration": 30, "EndTime": "2030-05-06T09:30:00Z", "ServiceId": "svc-1",
                                 "ServiceName": "Bike fitting", "StartTime": "2030-05-06T09:00:00Z",
                                 "StaffMembers": before["StaffMembers"]}
    assert after["ChangedFields"] == []  # the snapshot's payload is not changed by it


def test_a_note_edit_is_not_a_reschedule_and_order_is_no_change() -> None:
    before = payload()
    after = payload(serviceNotes="bring the bike and shoes", staffMemberIds=["s2", "s1"])
    assert with_change_details(after, before)["ChangedFields"] == ["ServiceNotes"]
    moved = payload(staffMemberIds=["s2"], serviceId="svc-2", serviceName="Repair")
    assert with_change_details(moved, before)["ChangedFields"] == ["StaffMembers", "ServiceId", "ServiceName"]
    customer = payload(customers=[{"name": "Ada", "emailAddress": "ada@example.test", "notes": "second visit"}])
    assert set(with_change_details(customer, before)["ChangedFields"]) == {"Customers", "CustomerNotes"}


def test_created_and_cancelled_events_leave_them_empty() -> None:
    stored = with_change_details(payload(), payload(serviceNotes="x"))  # a snapshot could hold anything
    for event in (with_change_details(payload()), with_change_details(stored)):
        assert event["ChangedFields"] == [] and event["Previous"] == EMPTY


def test_every_tracked_field_is_a_contract_field() -> None:
    assert set(CHANGE_TRACKED) <= set(payload())


def test_a_payload_stored_before_gets_the_new_fields_empty() -> None:
    old = {k: v for k, v in payload().items() if k not in ("ChangedFields", "Previous", "IsTest")}
    upgraded = upgrade_stored_payload(old, "AAMk1")
    assert_valid(upgraded)
    assert upgraded["ChangedFields"] == [] and upgraded["Previous"] == EMPTY and upgraded["IsTest"] is False
    earlier = {k: v for k, v in old.items() if k != "AppointmentId"}  # before AppointmentId, too
    assert_valid(upgrade_stored_payload(earlier, "AAMk1"))


@pytest.mark.parametrize("change_type", ["Created", "Updated", "Cancelled"])
def test_the_sample_fills_every_field_and_says_it_is_a_test(change_type: str) -> None:
    sample = sample_appointment_data(change_type, datetime(2030, 1, 1, 8, 30, tzinfo=UTC))
    assert_valid(sample)
    assert sample["IsTest"] is True and sample["CustomerName"] and sample["Customers"] and sample["StaffMembers"]
    assert bool(sample["CancelReason"]) == (change_type == "Cancelled")
    assert bool(sample["ChangedFields"]) == (change_type == "Updated") == bool(sample["Previous"]["StartTime"])


def test_filter_keys_are_the_service_and_staff_now_and_before() -> None:
    before = payload()
    after = payload(serviceId="svc-2", staffMemberIds=["s3"])
    keys = filter_properties(with_change_details(after, before))
    assert keys == {"ServiceIds": "svc-2,svc-1", "StaffMemberIds": "s3,s1,s2"}
    assert filter_properties(payload()) == {"ServiceIds": "svc-1", "StaffMemberIds": "s1,s2"}


def test_a_flow_matches_when_each_of_its_filters_shares_an_id() -> None:
    flow = Flow(mailbox="m@x.test", webhook_id="w", trigger="AppointmentCreated", callback_url="https://a/b",
                created_by_oid="o", created_by_upn="u", created=datetime.now(UTC))
    services, staff = frozenset({"svc-1"}), frozenset({"s1", "s2"})
    assert not flow.filtered and flow.matches(services, staff)
    only_service = dataclasses.replace(flow, service_ids=("svc-1", "svc-9"))
    assert only_service.filtered and only_service.matches(services, staff)
    assert not only_service.matches(frozenset({"svc-2"}), staff)
    both = dataclasses.replace(flow, service_ids=("svc-1",), staff_member_ids=("s3",))
    assert not both.matches(services, staff) and both.matches(services, frozenset({"s3"}))
    assert Flow.from_entity(both.entity()) == both  # stored with the flow
