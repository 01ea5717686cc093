"""Property tests: for any Graph-ish input — realistic shapes with fields missing, null, mistyped or
unknown, and plain random JSON — the mapping never raises and always yields a payload the connector
schema (made strict) accepts, and the group/1:1 and index invariants hold."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contracts.appointment_changes import content_fingerprint
from shared.contracts.appointment_data import to_appointment_data
from shared.contracts.graph_times import WINDOWS_TIME_ZONES

from .conftest import assert_valid
from .graph_shapes import QUESTIONS, SERVICES, STAFF

QIDS = [q["id"] for q in QUESTIONS]
STAFF_IDS = [s["id"] for s in STAFF]
SERVICE_IDS = [s["id"] for s in SERVICES]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
zones = st.sampled_from([*sorted(WINDOWS_TIME_ZONES)[:15], "UTC", "Asia/Tokyo", "Nowhere/Else", "", "Etc/GMT-14"])
date_times = st.builds(
    lambda d, suffix: d.isoformat() + suffix,
    st.datetimes(),
    st.sampled_from(["", ".0000000", ".1234567", "Z", ".0000000Z", "+09:00", "-05:30"]),
) | st.text(max_size=30)
dttzs = st.fixed_dictionaries({}, optional={"dateTime": date_times | json_values,
                                            "timeZone": zones | st.text(max_size=20) | json_values})
durations = st.from_regex(r"P(\d{1,4}D)?(T(\d{1,3}H)?(\d{1,4}M)?(\d{1,3}(\.\d{1,3})?S)?)?", fullmatch=True)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | json_values


addresses = st.fixed_dictionaries({}, optional={k: maybe(st.text(max_size=10)) for k in (
    "street", "city", "state", "countryOrRegion", "postalCode")})
locations = st.fixed_dictionaries(
    {}, optional={"displayName": maybe(st.text(max_size=10)), "address": maybe(addresses)})
option_texts = st.sampled_from(["English", "日本語", "Español", "Other"])
answers = st.fixed_dictionaries({}, optional={
    "questionId": maybe(st.sampled_from(QIDS) | st.text(max_size=5)),
    "answer": maybe(st.text(max_size=10) | option_texts),
    "selectedOptions": maybe(st.lists(option_texts | st.integers(-2, 5) | st.text(max_size=3), max_size=4)),
    "answerOptions": maybe(st.lists(option_texts | st.text(max_size=5), max_size=4)),
    "question": maybe(st.text(max_size=10)),
    "isRequired": maybe(st.booleans()),
    "answerInputType": maybe(st.sampled_from(["text", "radioButton", "unknownFutureValue"])),
})
customers = st.fixed_dictionaries({}, optional={
    "customerId": maybe(st.uuids().map(str)),
    "name": maybe(st.text(max_size=10)),
    "emailAddress": maybe(st.emails()),
    "phone": maybe(st.text(max_size=10)),
    "notes": maybe(st.text(max_size=10)),
    "timeZone": maybe(zones),
    "location": maybe(locations),
    "customQuestionAnswers": maybe(st.lists(maybe(answers), max_size=3)),
})
graph_fields = {
    "id": st.text(max_size=12),
    "selfServiceAppointmentId": st.sampled_from(["00000000-0000-0000-0000-000000000000", ""]) | st.uuids().map(str),
    "startDateTime": dttzs,
    "endDateTime": dttzs,
    "start": dttzs,
    "duration": durations,
    "staffMemberIds": st.lists(st.sampled_from(STAFF_IDS) | st.text(max_size=5) | st.integers(), max_size=4),
    "serviceId": st.sampled_from(SERVICE_IDS) | st.text(max_size=5),
    "serviceName": st.text(max_size=10),
    "serviceNotes": st.text(max_size=10),
    "additionalInformation": st.text(max_size=10),
    "customerTimeZone": zones,
    "customers": st.lists(maybe(customers), max_size=4),
    "maximumAttendeesCount": st.integers(-1, 2**40),
    "filledAttendeesCount": st.integers(-1, 2**40),
    "smsNotificationsEnabled": st.booleans(),
    "joinWebUrl": st.text(max_size=20),
    "isLocationOnline": st.booleans(),
    "serviceLocation": locations,
    "customerName": st.text(max_size=10),
    "customerEmailAddress": st.text(max_size=10),
    "customerLocation": locations,
}
appointments = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries({}, optional={k: maybe(v) for k, v in graph_fields.items()}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
lookups = st.lists(maybe(st.sampled_from([*STAFF, *SERVICES, *QUESTIONS])), max_size=6)


def check_invariants(appt: Any, data: Any) -> None:
    assert_valid(data)
    assert data["Id"] == data["SelfServiceAppointmentId"]
    if isinstance(appt, dict):
        # Graph's own values, never ours or the service's: the ids as Graph has them, the appointment's notes.
        for name, graph_name in (("AppointmentId", "id"), ("SelfServiceAppointmentId", "selfServiceAppointmentId"),
                                 ("ServiceNotes", "serviceNotes"), ("AdditionalInfo", "additionalInformation")):
            value = appt.get(graph_name)
            if value is None or isinstance(value, str):
                assert data[name] == (value or ""), name  # type: ignore[literal-required]
    assert 0 <= data["Duration"] < 2**31 and 0 <= data["MaxAttendeesCount"] < 2**31
    assert all(member["Id"] for member in data["StaffMembers"])
    ids = appt.get("staffMemberIds") if isinstance(appt, dict) else None
    assert len(data["StaffMembers"]) <= (len(ids) if isinstance(ids, list) else 0)
    for question in [*data["CustomQuestionAnswers"], *(a for c in data["Customers"] for a in c["Answers"])]:
        assert all(0 <= i < len(question["AnswerOptions"]) for i in question["SelectedOptions"])
    top_level = [data[f] for f in ("CustomerName", "CustomerEmail", "CustomerId", "CustomerNotes")]  # type: ignore[literal-required]
    if any(top_level) or data["CustomQuestionAnswers"]:
        assert len(data["Customers"]) == 1, "top-level customer fields only for 1:1"
        assert data["CustomQuestionAnswers"] == data["Customers"][0]["Answers"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(appt=appointments, services=lookups, staff=lookups, questions=lookups, reason=maybe(st.text(max_size=5)))
def test_graph_shaped_input_always_maps_to_a_valid_payload(
    appt: dict[str, Any], services: Any, staff: Any, questions: Any, reason: Any
) -> None:
    before = copy.deepcopy(appt)
    data = to_appointment_data(appt, services=services, staff=staff, questions=questions,
                               cancel_reason=reason if isinstance(reason, str) else "")
    check_invariants(appt, data)
    assert appt == before  # inputs are not modified
    assert content_fingerprint(appt) == content_fingerprint(copy.deepcopy(appt))


@settings(max_examples=200)
@given(appt=json_values, lookups=json_values)
def test_any_json_maps_to_a_valid_payload(appt: Any, lookups: Any) -> None:
    sequence = lookups if isinstance(lookups, list) else ()
    data = to_appointment_data(appt, services=sequence, staff=sequence, questions=sequence)
    check_invariants(appt, data)
    content_fingerprint(appt)
