"""``content_fingerprint``: equal for changes no flow maker sees, different for every change one does."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from shared.contracts.appointment_changes import FINGERPRINT_VERSION, content_fingerprint

from .graph_shapes import Q_LANGUAGE, STAFF_BEN, answer, appointment, customer, dttz, group_appointment, location

Mutation = Callable[[dict[str, Any]], None]


def _group() -> dict[str, Any]:
    return group_appointment([
        customer("c-1", "Ana", "ana@example.test", notes="First.", answers=[answer(Q_LANGUAGE, "", ["English"])]),
        customer("c-2", "Bo", "bo@example.test", where=location("Office", city="Osaka")),
    ])


def _set(**fields: Any) -> Mutation:
    return lambda a: a.update(copy.deepcopy(fields))


def _customer0(**fields: Any) -> Mutation:
    return lambda a: a["customers"][0].update(copy.deepcopy(fields))


IRRELEVANT: dict[str, Mutation] = {
    "lastUpdatedDateTime": _set(lastUpdatedDateTime="2027-01-01T00:00:00.0000000Z"),
    "createdDateTime": _set(createdDateTime="2020-01-01T00:00:00Z"),
    "etag and context": _set(**{"@odata.etag": 'W/"other"', "@odata.context": "elsewhere"}),
    "unknown field": _set(somethingNew={"a": 1}),
    "reminders": _set(reminders=[{"message": "x", "offset": "P1D", "recipients": "allAttendees"}]),
    "same instant, other zone": _set(startDateTime=dttz("2026-11-25T18:00:00.0000000", "Tokyo Standard Time")),
    "same instant, offset": _set(startDateTime=dttz("2026-11-25T09:00:00+00:00")),
    "same instant, fraction digits": _set(endDateTime=dttz("2026-11-25T09:30:00Z")),
    "staff order": lambda a: a["staffMemberIds"].reverse(),
    "customer order": lambda a: a["customers"].reverse(),
    "null vs empty notes": lambda a: a["customers"][1].update(notes=""),
    "key order": lambda a: [a.update({k: a.pop(k)}) for k in sorted(a, reverse=True)],
}

RELEVANT: dict[str, Mutation] = {
    "start": _set(startDateTime=dttz("2026-11-25T09:15:00.0000000Z")),
    "end": _set(endDateTime=dttz("2026-11-25T10:00:00.0000000Z")),
    "staff removed": lambda a: a["staffMemberIds"].pop(),
    "staff swapped": _set(staffMemberIds=["someone-else", STAFF_BEN]),
    "customer added": lambda a: a["customers"].append(customer("c-9", "Zed", "zed@example.test")),
    "customer removed": lambda a: a["customers"].pop(),
    "customer email": _customer0(emailAddress="new@example.test"),
    "customer phone": _customer0(phone="+1 555 0000"),
    "customer notes": _customer0(notes="Changed my mind."),
    "customer location": lambda a: a["customers"][1].update(location=location("Office", city="Kobe")),
    "answer text": lambda a: a["customers"][0]["customQuestionAnswers"][0].update(selectedOptions=["Español"]),
    "answer added": lambda a: a["customers"][1]["customQuestionAnswers"].append(answer("q-x", "Yes")),
    "service": _set(serviceId="another-service"),
    "service name": _set(serviceName="Renamed class"),
    "service notes": _set(serviceNotes="New staff note."),
    "additional information": _set(additionalInformation="Bring water."),
    "online link": _set(joinWebUrl="https://teams.microsoft.com/l/meetup-join/other"),
    "went in person": _set(isLocationOnline=False),
    "service location": _set(serviceLocation=location("Annex", city="Tacoma")),
    "capacity": _set(maximumAttendeesCount=20),
    "sms": _set(smsNotificationsEnabled=False),
}


def test_fingerprint_is_versioned_and_deterministic() -> None:
    first, second = content_fingerprint(_group()), content_fingerprint(_group())
    assert first == second and first.startswith(FINGERPRINT_VERSION + ":")
    assert len(first.split(":", 1)[1]) == 64


@pytest.mark.parametrize("name", sorted(IRRELEVANT))
def test_changes_no_flow_sees_keep_the_fingerprint(name: str) -> None:
    changed = _group()
    IRRELEVANT[name](changed)
    assert changed != _group() or name == "key order"
    assert content_fingerprint(changed) == content_fingerprint(_group())


@pytest.mark.parametrize("name", sorted(RELEVANT))
def test_changes_a_flow_maker_cares_about_change_the_fingerprint(name: str) -> None:
    changed = _group()
    RELEVANT[name](changed)
    assert content_fingerprint(changed) != content_fingerprint(_group())


def test_one_to_one_and_group_of_the_same_customer_differ() -> None:
    one = appointment()
    assert content_fingerprint(one) != content_fingerprint({**one, "maximumAttendeesCount": 5})


def test_fingerprint_never_raises_on_junk() -> None:
    for junk in ({}, {"customers": "x", "startDateTime": 5}, {"staffMemberIds": [None, 3]}):
        assert content_fingerprint(junk).startswith(FINGERPRINT_VERSION)


# Snapshots in storage hold fingerprints computed by earlier versions. These are v1 values from before the
# payload got AppointmentId and stopped filling the service's notes in: if one moves, every stored
# appointment the next reconcile reads looks Updated. Change them only together with FINGERPRINT_VERSION.
STORED_V1 = {
    "one to one": (appointment, "v1:d27a743f20c4425625da9fc159ae1a52e5017a3f8943fda9833217fea918f604"),
    "no notes": (lambda: appointment(serviceNotes=None, additionalInformation=None),
                 "v1:73aa72ed1821c0419974620c8cdff5c15a50dce59f649ff0dd165f3917bc8aec"),
    "empty": (dict, "v1:85c1dbfad75306bd77c0ab5c60cef7b83d9620628642a786a2588bcea8bc15be"),
}


@pytest.mark.parametrize("name", sorted(STORED_V1))
def test_fingerprints_stored_by_earlier_versions_still_match(name: str) -> None:
    build, stored = STORED_V1[name]
    assert content_fingerprint(build()) == stored


@pytest.mark.parametrize("self_service", ["00000000-0000-0000-0000-000000000000", "", None])
def test_ids_are_not_content(self_service: object) -> None:
    # The payload's ids changed meaning (SelfServiceAppointmentId as Graph has it, AppointmentId added):
    # nothing of that is hashed, so it cannot make appointments look updated.
    assert content_fingerprint(appointment(selfServiceAppointmentId=self_service)) == content_fingerprint(
        appointment())
