"""``to_appointment_data`` rule by rule (issue 7 item 2), on hand-written Graph JSON (``graph_shapes``)."""

from __future__ import annotations

import copy
import typing
from typing import Any

import pytest

from shared.contracts import appointment_changes
from shared.contracts import appointment_data as ad
from shared.contracts.appointment_data import to_appointment_data

from .conftest import STRICT, assert_valid, load_swagger
from .graph_shapes import (
    HANAKO,
    Q_LANGUAGE,
    Q_REASON,
    QUESTIONS,
    SERVICE_CLASS,
    SERVICE_CONSULT,
    SERVICES,
    STAFF,
    STAFF_ADA,
    STAFF_BEN,
    ZERO_GUID,
    answer,
    appointment,
    customer,
    group_appointment,
    location,
    service,
)

LOOKUPS: dict[str, Any] = {"services": SERVICES, "staff": STAFF, "questions": QUESTIONS}
EMPTY_LOCATION = {"DisplayName": "", "PhysicalAddress": dict.fromkeys(
    ("City", "CountryOrRegion", "PostalCode", "State", "Street"), "")}


def mapped(appt: dict[str, Any], **kwargs: Any) -> ad.AppointmentData:
    data = to_appointment_data(appt, **{**LOOKUPS, **kwargs})
    assert_valid(data)
    return data


def expected_location(loc: dict[str, Any]) -> dict[str, Any]:
    a = loc["address"]
    return {"DisplayName": loc["displayName"], "PhysicalAddress": {
        "City": a["city"], "CountryOrRegion": a["countryOrRegion"], "PostalCode": a["postalCode"],
        "State": a["state"], "Street": a["street"]}}


# ---- the contract's shape --------------------------------------------------------------------------


def _typed_keys(td: Any) -> set[str]:
    return set(typing.get_type_hints(td))


def test_typeddicts_are_the_connector_definitions() -> None:
    definitions = load_swagger()["definitions"]
    props = definitions["AppointmentData"]["properties"]
    assert _typed_keys(ad.AppointmentData) == set(props)
    assert _typed_keys(ad.CustomerData) == set(definitions["CustomerData"]["properties"])
    assert _typed_keys(ad.CustomQuestion) == set(definitions["CustomQuestion"]["properties"])
    assert _typed_keys(ad.StaffMember) == set(definitions["StaffMemberData"]["properties"])
    assert _typed_keys(ad.CustomerLocation) == set(props["CustomerLocation"]["properties"])
    address = props["CustomerLocation"]["properties"]["PhysicalAddress"]["properties"]
    assert _typed_keys(ad.PhysicalAddress) == set(address)


def test_strict_validator_catches_a_misspelt_missing_or_mistyped_field() -> None:
    good = mapped(appointment())
    misspelt = {**{k: v for k, v in good.items() if k != "JoinWebURL"}, "JoinWebUrl": good["JoinWebURL"]}
    nested = copy.deepcopy(good)
    del nested["Customers"][0]["Answers"][0]["SelectedOptions"]
    mistyped = {**good, "Duration": "30"}
    for bad in (misspelt, nested, mistyped):
        assert list(STRICT.iter_errors(bad))


# ---- 1:1 -------------------------------------------------------------------------------------------


def test_one_to_one_fills_the_top_level_customer_fields_and_customers() -> None:
    appt = appointment()
    data = mapped(appt)
    (one,) = data["Customers"]
    assert one["Name"] == data["CustomerName"] == HANAKO["name"]
    assert one["Email"] == data["CustomerEmail"] == HANAKO["emailAddress"]
    assert one["Id"] == data["CustomerId"] == HANAKO["customerId"]
    assert one["Notes"] == data["CustomerNotes"] == HANAKO["notes"]
    assert one["Location"] == data["CustomerLocation"] == expected_location(HANAKO["location"])
    assert data["CustomerPhone"] == HANAKO["phone"]
    assert one["TimeZone"] == HANAKO["timeZone"]
    assert data["CustomerTimeZone"] == appt["customerTimeZone"]
    assert data["CustomQuestionAnswers"] == one["Answers"] and len(one["Answers"]) == 2


def test_one_to_one_customer_time_zone_falls_back_to_the_customers() -> None:
    data = mapped(appointment(customerTimeZone=None))
    assert data["CustomerTimeZone"] == HANAKO["timeZone"]


def test_one_to_one_answers_are_filled_with_question_text_options_and_required() -> None:
    data = mapped(appointment())
    reason, language = data["CustomQuestionAnswers"]
    assert reason == {"Answer": "Knee pain", "AnswerOptions": [], "IsRequired": True,
                      "Question": "Reason for visit", "QuestionID": Q_REASON, "SelectedOptions": []}
    options = next(q["answerOptions"] for q in QUESTIONS if q["id"] == Q_LANGUAGE)
    # Graph's selectedOptions are option texts; the contract wants indexes, and the text as Answer.
    assert language == {"Answer": "日本語", "AnswerOptions": options, "IsRequired": False,
                        "Question": "Preferred language", "QuestionID": Q_LANGUAGE,
                        "SelectedOptions": [options.index("日本語")]}


def test_customer_notes_service_notes_and_additional_info_are_filled() -> None:
    appt = appointment()
    data = mapped(appt)
    assert (data["CustomerNotes"], data["ServiceNotes"], data["AdditionalInfo"]) == (
        HANAKO["notes"], appt["serviceNotes"], appt["additionalInformation"])


@pytest.mark.parametrize("missing", ["absent", None, "", 0])
def test_service_notes_and_additional_info_are_the_appointments_own_never_the_services(missing: Any) -> None:
    """Regression: an appointment without notes reported its service's notes and description as if a staff
    member had written them for it."""
    consult = next(s for s in SERVICES if s["id"] == SERVICE_CONSULT)
    assert consult["notes"] and consult["additionalInformation"]  # the service has text that could stand in
    appt = appointment()
    for field in ("serviceNotes", "additionalInformation"):
        if missing == "absent":
            del appt[field]
        else:
            appt[field] = missing
    data = mapped(appt)
    assert (data["ServiceNotes"], data["AdditionalInfo"]) == ("", "")


def test_legacy_top_level_customer_properties_stand_in_for_a_missing_customers_collection() -> None:
    appt = appointment()
    del appt["customers"]
    data = mapped(appt)
    assert data["CustomerName"] == appt["customerName"] and data["CustomerEmail"] == appt["customerEmailAddress"]
    assert data["CustomerPhone"] == appt["customerPhone"]
    assert data["CustomerLocation"] == expected_location(appt["customerLocation"])
    assert [c["Id"] for c in data["Customers"]] == [appt["customerId"]]


# ---- group -------------------------------------------------------------------------------------------


def _three() -> list[dict[str, Any]]:
    return [
        customer("c-1", "Ana", "ana@example.test", notes="First time.", time_zone="Pacific Standard Time",
                 where=location("Office", city="Redmond"), answers=[answer(Q_LANGUAGE, "", ["English"])]),
        customer("c-2", "Bo", "bo@example.test", notes=None, answers=[answer(Q_LANGUAGE, "", ["Español"])]),
        customer("c-3", "Chie", "chie@example.test", notes="Wheelchair access.", where=None,
                 answers=[answer(Q_REASON, "Curious"), answer(Q_LANGUAGE, "", [])]),
    ]


def test_group_lists_every_customer_with_their_answers_and_leaves_top_level_customer_fields_empty() -> None:
    customers = _three()
    data = mapped(group_appointment(customers))
    assert [c["Id"] for c in data["Customers"]] == [c["customerId"] for c in customers]
    assert [c["Name"] for c in data["Customers"]] == [c["name"] for c in customers]
    assert [c["Email"] for c in data["Customers"]] == [c["emailAddress"] for c in customers]
    assert [c["Notes"] for c in data["Customers"]] == [c["notes"] or "" for c in customers]
    assert [c["TimeZone"] for c in data["Customers"]] == [c["timeZone"] for c in customers]
    assert data["Customers"][0]["Location"] == expected_location(customers[0]["location"])
    assert data["Customers"][2]["Location"] == EMPTY_LOCATION
    options = next(q["answerOptions"] for q in QUESTIONS if q["id"] == Q_LANGUAGE)
    answers = [[(a["QuestionID"], a["Answer"], a["SelectedOptions"]) for a in c["Answers"]] for c in data["Customers"]]
    assert answers == [
        [(Q_LANGUAGE, "English", [options.index("English")])],
        [(Q_LANGUAGE, "Español", [options.index("Español")])],
        [(Q_REASON, "Curious", []), (Q_LANGUAGE, "", [])],
    ]
    # Microsoft's rule for group bookings: customer data lives in Customers only.
    for field in ("CustomerName", "CustomerEmail", "CustomerId", "CustomerNotes", "CustomerPhone", "CustomerTimeZone"):
        assert data[field] == "", field  # type: ignore[literal-required]
    assert data["CustomerLocation"] == EMPTY_LOCATION and data["CustomQuestionAnswers"] == []
    assert (data["MaxAttendeesCount"], data["FilledAttendeesCount"]) == (12, 3)


def test_group_is_recognised_from_the_service_when_the_appointment_lacks_the_count() -> None:
    appt = group_appointment([copy.deepcopy(HANAKO)])
    del appt["maximumAttendeesCount"]
    data = mapped(appt)
    assert data["MaxAttendeesCount"] == next(s for s in SERVICES if s["id"] == SERVICE_CLASS)["maximumAttendeesCount"]
    assert data["CustomerName"] == "" and [c["Name"] for c in data["Customers"]] == [HANAKO["name"]]


def test_without_any_count_one_customer_is_one_to_one_and_several_are_a_group() -> None:
    one = appointment(maximumAttendeesCount=None)
    assert mapped(one, services=())["CustomerName"] == HANAKO["name"]
    several = appointment(maximumAttendeesCount=None, customers=_three())
    data = mapped(several, services=())
    assert data["CustomerName"] == "" and len(data["Customers"]) == 3


def test_filled_attendees_count_is_counted_when_graph_omits_it() -> None:
    assert mapped(group_appointment(_three(), filledAttendeesCount=None))["FilledAttendeesCount"] == 3


# ---- staff -------------------------------------------------------------------------------------------


def test_staff_members_carry_names_and_emails_in_graph_order() -> None:
    data = mapped(appointment(staffMemberIds=[STAFF_BEN, STAFF_ADA]))
    by_id = {s["id"]: s for s in STAFF}
    assert data["StaffMembers"] == [
        {"DisplayName": by_id[i]["displayName"], "EmailAddress": by_id[i]["emailAddress"], "Id": i}
        for i in (STAFF_BEN, STAFF_ADA)
    ]


def test_unknown_staff_id_keeps_its_id_with_empty_name_and_email() -> None:
    data = mapped(appointment(staffMemberIds=["gone-staff", STAFF_ADA]))
    assert data["StaffMembers"][0] == {"DisplayName": "", "EmailAddress": "", "Id": "gone-staff"}
    assert data["StaffMembers"][1]["Id"] == STAFF_ADA and data["StaffMembers"][1]["DisplayName"]


@pytest.mark.parametrize("ids", [None, [], "not-a-list", [None, ""]])
def test_no_staff_is_an_empty_array(ids: Any) -> None:
    assert mapped(appointment(staffMemberIds=ids))["StaffMembers"] == []


# ---- ids, service, flags -----------------------------------------------------------------------------


def test_self_service_appointment_carries_its_own_self_service_id_and_the_graph_id() -> None:
    appt = appointment()  # booked by the customer on the booking page
    data = mapped(appt)
    assert data["Id"] == data["SelfServiceAppointmentId"] == appt["selfServiceAppointmentId"]
    assert data["AppointmentId"] == appt["id"] != appt["selfServiceAppointmentId"]


def test_staff_created_appointment_carries_the_zero_guid_and_the_graph_id() -> None:
    """Regression: both ids held the Graph id for appointments staff created, so a flow could not tell who
    booked; Graph returns the all-zero GUID for them and the contract passes it on."""
    appt = appointment(selfServiceAppointmentId=ZERO_GUID)
    data = mapped(appt)
    assert data["Id"] == data["SelfServiceAppointmentId"] == ZERO_GUID
    assert data["AppointmentId"] == appt["id"]


@pytest.mark.parametrize("self_service", [None, "", "absent"])
def test_no_self_service_id_from_graph_is_empty_never_the_graph_id(self_service: Any) -> None:
    appt = appointment(selfServiceAppointmentId=self_service)
    if self_service == "absent":
        del appt["selfServiceAppointmentId"]
    data = mapped(appt)
    assert data["Id"] == data["SelfServiceAppointmentId"] == ""
    assert data["AppointmentId"] == appt["id"]


def test_group_appointments_carry_the_graph_id_too() -> None:
    appt = group_appointment(_three())
    data = mapped(appt)
    assert data["AppointmentId"] == appt["id"] and data["SelfServiceAppointmentId"] == ZERO_GUID


def test_service_fields_flags_and_link() -> None:
    appt = appointment()
    data = mapped(appt)
    assert (data["ServiceId"], data["ServiceName"]) == (appt["serviceId"], appt["serviceName"])
    assert data["JoinWebURL"] == appt["joinWebUrl"]
    assert data["IsSMSNotificationsEnabled"] is True
    assert mapped(appointment(smsNotificationsEnabled=False))["IsSMSNotificationsEnabled"] is False
    assert mapped(appointment(joinWebUrl=None))["JoinWebURL"] == ""


def test_service_name_comes_from_the_service_when_missing() -> None:
    data = mapped(appointment(serviceName=None))
    assert data["ServiceName"] == next(s for s in SERVICES if s["id"] == SERVICE_CONSULT)["displayName"]


def test_cancel_reason_is_the_argument() -> None:
    assert mapped(appointment())["CancelReason"] == ""
    assert mapped(appointment(), cancel_reason="Customer is ill.")["CancelReason"] == "Customer is ill."


# ---- answers -----------------------------------------------------------------------------------------


def _only_answer(a: dict[str, Any], **kwargs: Any) -> ad.CustomQuestion:
    appt = appointment(customers=[customer("c-9", "Dee", "dee@example.test", answers=[a])])
    return mapped(appt, **kwargs)["CustomQuestionAnswers"][0]


def test_answer_snapshot_in_graph_wins_over_the_current_question() -> None:
    # The customer answered when the options were different; their selection indexes those options.
    a = answer(Q_LANGUAGE, "", ["Deutsch"], question="Language?", answerOptions=["Deutsch", "English"],
               isRequired=True)
    got = _only_answer(a)
    assert (got["Question"], got["AnswerOptions"], got["IsRequired"]) == ("Language?", ["Deutsch", "English"], True)
    assert (got["Answer"], got["SelectedOptions"]) == ("Deutsch", [0])


def test_integer_selected_options_are_indexes_and_out_of_range_ones_are_dropped() -> None:
    got = _only_answer(answer(Q_LANGUAGE, "", [2, 7, -1, True]))
    assert got["SelectedOptions"] == [2]


def test_radio_answer_given_as_text_selects_its_option() -> None:
    got = _only_answer(answer(Q_LANGUAGE, "English"))
    assert (got["Answer"], got["SelectedOptions"]) == ("English", [0])


def test_several_selected_options_are_all_reported() -> None:
    got = _only_answer(answer(Q_LANGUAGE, "", ["Español", "English", "Klingon"]))
    assert (got["Answer"], got["SelectedOptions"]) == ("Español, English", [2, 0])


def test_answer_to_an_unknown_question_keeps_its_id_and_text() -> None:
    got = _only_answer(answer("q-unknown", "Yes"), questions=())
    assert got == {"Answer": "Yes", "AnswerOptions": [], "IsRequired": False, "Question": "",
                   "QuestionID": "q-unknown", "SelectedOptions": []}


def test_required_comes_from_the_service_when_the_answer_does_not_say() -> None:
    required = {Q_REASON: False, Q_LANGUAGE: True}
    svc = [service(required=required)]
    got = [
        (a["QuestionID"], a["IsRequired"])
        for a in mapped(appointment(), services=svc)["CustomQuestionAnswers"]
    ]
    assert got == list(required.items())


# ---- locations, missing and unknown fields -------------------------------------------------------------


def test_customer_location_maps_every_address_field() -> None:
    where = location("Clinic B", street="2 Side St", city="Kyoto", state="Kyoto", countryOrRegion="Japan",
                     postalCode="600-8216")
    data = mapped(appointment(customers=[customer("c-1", "E", "e@example.test", where=where)]))
    assert data["CustomerLocation"] == expected_location(where)


def test_empty_appointment_maps_to_an_all_empty_valid_payload() -> None:
    data = to_appointment_data({})
    assert_valid(data)
    assert data["Customers"] == [] and data["StaffMembers"] == [] and data["CustomQuestionAnswers"] == []
    assert (data["Duration"], data["StartTime"], data["Id"], data["IsSMSNotificationsEnabled"]) == (0, "", "", False)
    assert data["AppointmentId"] == ""


def test_unknown_graph_fields_are_ignored() -> None:
    plain = appointment()
    noisy = appointment(invoiceAmount=12.5, futureThing={"nested": [1, 2]}, appointmentLabel="VIP")
    noisy["customers"][0]["loyaltyTier"] = "gold"
    noisy["customers"][0]["customQuestionAnswers"][0]["futureField"] = None
    assert mapped(noisy) == mapped(plain)


def test_nulls_and_wrong_types_become_empty_values() -> None:
    appt = appointment(
        serviceName=None, joinWebUrl=42, smsNotificationsEnabled="yes", maximumAttendeesCount="many",
        filledAttendeesCount=None, customers=[{"name": None, "location": "here", "customQuestionAnswers": "x"}, 7],
    )
    data = mapped(appt)
    assert data["CustomerName"] == "" and data["CustomerLocation"] == EMPTY_LOCATION
    assert data["IsSMSNotificationsEnabled"] is False and data["Customers"][0]["Answers"] == []
    assert data["JoinWebURL"] == "42"  # a number where a string belongs is still shown, as text


def test_the_mapping_does_not_modify_its_inputs() -> None:
    appt, lookups = appointment(), copy.deepcopy(LOOKUPS)
    before = copy.deepcopy((appt, lookups))
    to_appointment_data(appt, **lookups, cancel_reason="x")
    assert (appt, lookups) == before


# ---- payloads stored by an earlier version (snapshots become Cancelled events) --------------------------


def _stored_before_appointment_id(appt: dict[str, Any]) -> dict[str, Any]:
    """What the version before AppointmentId stored: no AppointmentId, and the Graph id in both ids for an
    appointment staff created."""
    data = dict(mapped(appt))
    del data["AppointmentId"]
    if appt["selfServiceAppointmentId"] in (ZERO_GUID, None, ""):
        data["Id"] = data["SelfServiceAppointmentId"] = appt["id"]
    return data


def test_an_old_payload_of_a_staff_created_appointment_gets_its_appointment_id_and_the_zero_guid() -> None:
    appt = appointment(selfServiceAppointmentId=ZERO_GUID)
    old = _stored_before_appointment_id(appt)
    upgraded = appointment_changes.upgrade_stored_payload(old, appt["id"])
    assert_valid(upgraded)
    assert upgraded == mapped(appt)
    assert "AppointmentId" not in old  # the stored payload itself is not changed


def test_an_old_payload_of_a_self_service_appointment_keeps_its_self_service_id() -> None:
    appt = appointment()
    upgraded = appointment_changes.upgrade_stored_payload(_stored_before_appointment_id(appt), appt["id"])
    assert upgraded == mapped(appt)
    assert upgraded["SelfServiceAppointmentId"] == appt["selfServiceAppointmentId"]


def test_a_current_payload_is_left_as_it_is() -> None:
    current = dict(mapped(appointment(selfServiceAppointmentId="")))
    assert appointment_changes.is_current_payload(current)
    assert appointment_changes.upgrade_stored_payload(current, "some-other-id") == current
    assert not appointment_changes.is_current_payload(_stored_before_appointment_id(appointment()))

