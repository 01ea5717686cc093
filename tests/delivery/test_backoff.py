"""Pure parts of delivery: Retry-After, back-off, the retry window, message parsing, the carried event."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from shared.adapters import callback_client
from shared.adapters.settings import get_settings
from shared.messages import deliveries
from shared.records import outbox
from shared.workers import delivery
from tests.delivery.conftest import new_message


def test_retry_after_in_seconds_and_as_http_date() -> None:
    now = datetime(2026, 11, 25, 8, 0, 0, tzinfo=UTC)
    assert callback_client.retry_after_seconds("120", now) == 120
    assert callback_client.retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert callback_client.retry_after_seconds(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0
    for unreadable in (None, "", "soon", "-5", "1.5"):
        assert callback_client.retry_after_seconds(unreadable, now) is None


def test_retry_after_is_capped() -> None:
    assert delivery.backoff_seconds(0, 30) == 30
    assert delivery.backoff_seconds(0, 10 ** 9) == delivery.RETRY_AFTER_CAP_SECONDS


def test_a_retry_after_below_the_floor_waits_the_floor() -> None:
    """``Retry-After: 1`` on every answer once meant a POST a second per event for a day."""
    assert delivery.RETRY_AFTER_FLOOR_SECONDS == 30
    for asked in (0, 1, 29.9):
        assert delivery.backoff_seconds(3, asked) == 30
    assert delivery.backoff_seconds(3, 45) == 45


def test_past_the_fast_attempts_an_event_is_paced() -> None:
    """The ceiling on attempts per event per hour: after the first six, at least 5 minutes apart."""
    assert delivery.PACED_SECONDS == 3600 / delivery.MAX_ATTEMPTS_PER_HOUR == 300
    for attempt in range(delivery.FAST_ATTEMPTS - 1):
        assert delivery.paced(attempt, 1.5) == 1.5  # quick retries for a blip
    for attempt in (delivery.FAST_ATTEMPTS - 1, delivery.FAST_ATTEMPTS, 40):
        assert delivery.paced(attempt, 1.5) == 300
        assert delivery.paced(attempt, 900) == 900


def test_backoff_is_full_jitter_under_an_exponential_ceiling_and_a_cap() -> None:
    random.seed(7)
    for attempt in range(0, 40):
        ceiling = min(delivery.BACKOFF_CAP_SECONDS, delivery.BACKOFF_BASE_SECONDS * 2 ** attempt)
        samples = [delivery.backoff_seconds(attempt, None) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        # Spread over the whole range (full jitter), not clustered at the ceiling.
        assert min(samples) < ceiling * 0.1 and max(samples) > ceiling * 0.9
    assert delivery.BACKOFF_CAP_SECONDS == 900


def test_message_round_trip_and_rejects() -> None:
    message = new_message("Clinic@Contoso.test", "e1", "f1", "c1")
    parsed = deliveries.parse_message(json.dumps(message).encode())
    assert parsed == {**message, "mailbox": "clinic@contoso.test"}
    for bad in (b"[]", b"{}", b"nope", json.dumps({**message, "attempt": -1}).encode(),
                json.dumps({**message, "attempt": True}).encode(),
                json.dumps({**message, "firstAttemptAt": "yesterday"}).encode()):
        with pytest.raises(ValueError):
            deliveries.parse_message(bad)


def test_an_outbox_row_becomes_the_event_a_message_carries() -> None:
    detected = datetime(2026, 11, 25, 8, 0, 0, tzinfo=UTC)
    payload = {"AppointmentId": "appt-1", "CustomerName": "Aiko 山田"}
    row = {"Trigger": "AppointmentCreated", "ChangeType": "Created", "AppointmentId": "appt-1",
           "DetectedAt": detected, "IsTest": True, **outbox.payload_properties(payload)}
    assert deliveries.event_from_row(row) == {
        "trigger": "AppointmentCreated", "changeType": "Created", "appointmentId": "appt-1",
        "detectedAt": "2026-11-25T08:00:00+00:00", "isTest": True, "payload": payload}
    assert deliveries.event_from_row(row, with_payload=False)["payload"] == {}
    bare = deliveries.event_from_row({"Trigger": "AppointmentCancelled"}, with_payload=False)
    assert bare["detectedAt"] is None and bare["isTest"] is False and bare["changeType"] == ""


def _failed(retry_after: float | None = None, outcome: str = "retry", error_code: str = "HttpError"
            ) -> callback_client.Attempt:
    return callback_client.Attempt(outcome=outcome, status=503, error_code=error_code, error_text="",
                                   duration_ms=1, retry_after=retry_after)


def test_a_retry_waits_its_back_off_but_never_past_the_retry_window(app_env) -> None:
    window = timedelta(hours=get_settings().delivery_retry_hours)
    clinic = "clinic@contoso.test"
    fresh = new_message(clinic, "e1", "f1", "c1")
    assert delivery._retry_delay(fresh, _failed(retry_after=120)) == 120
    nearly_over = new_message(clinic, "e1", "f1", "c1", datetime.now(UTC) - window + timedelta(seconds=30))
    assert 0 < delivery._retry_delay(nearly_over, _failed(retry_after=600)) <= 30  # one last attempt at the end
    over = new_message(clinic, "e1", "f1", "c1", datetime.now(UTC) - window - timedelta(seconds=1))
    assert delivery._retry_delay(over, _failed(retry_after=1)) is None


def test_the_dead_letter_reason_says_why_it_was_not_retried() -> None:
    assert delivery._dead_letter_reason(_failed()) == "retryWindowExhausted"
    rejected = {"AddressNotAllowed": "addressNotAllowed", "Redirected": "redirected", "HttpError": "rejected"}
    for code, reason in rejected.items():
        assert delivery._dead_letter_reason(_failed(outcome="deadLetter", error_code=code)) == reason
