"""Pure parts of delivery: Retry-After, back-off, message parsing."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from shared.adapters import callback_client
from shared.messages import deliveries
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
