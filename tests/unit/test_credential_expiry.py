"""The connector secret's expiry is warned of from 30 days before (shared/workers/credential_expiry.py), and the
connector-secret-expiring alert fires on what the check emits (its KQL over the rows Application Insights would
store, tests/app_insights.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from shared.adapters.settings import SettingsError, load_settings
from shared.contracts import events
from shared.workers import credential_expiry
from testing.settings import sample_settings
from tests.app_insights import alert_rows, capture, fires

EXPIRES = "2027-06-30T12:00:00Z"


def _settings(expires: str) -> object:
    return load_settings({**sample_settings(), "CONNECTOR_CREDENTIAL_EXPIRES_AT": expires})


async def test_quiet_until_thirty_days_before_then_the_alert_fires() -> None:
    settings = _settings(EXPIRES)
    with capture() as quiet:
        assert await credential_expiry.check_connector_secret(settings, datetime(2027, 5, 30, 11, tzinfo=UTC)) == 31
    assert alert_rows("connector-secret-expiring", quiet) == []
    with capture() as warned:
        assert await credential_expiry.check_connector_secret(settings, datetime(2027, 5, 31, 13, tzinfo=UTC)) == 29
    (row,) = alert_rows("connector-secret-expiring", warned)
    assert fires("connector-secret-expiring", [row])
    assert (row["daysLeft"], row["state"]) == (29, "expiringSoon")
    assert str(row["expiresAt"]).startswith("2027-06-30")
    (event,) = warned.rows()["customEvents"]
    assert event["name"] == events.CONNECTOR_SECRET_EXPIRING


async def test_an_expired_secret_is_an_error_and_says_so() -> None:
    with capture() as captured:
        assert await credential_expiry.check_connector_secret(_settings(EXPIRES),
                                                              datetime(2027, 7, 2, 12, 30, tzinfo=UTC)) == -3
    (row,) = alert_rows("connector-secret-expiring", captured)
    assert row["state"] == "expired"


async def test_no_recorded_expiry_is_a_warning_in_the_log_not_an_alert(caplog: pytest.LogCaptureFixture) -> None:
    with capture() as captured, caplog.at_level(logging.WARNING):
        assert await credential_expiry.check_connector_secret(_settings("")) is None
    assert alert_rows("connector-secret-expiring", captured) == []
    assert "CONNECTOR_CREDENTIAL_EXPIRES_AT is not set" in caplog.text


def test_the_recorded_expiry_must_be_an_instant() -> None:
    assert _settings("2027-06-30T14:00:00+02:00").connector_credential_expires_at == EXPIRES
    for bad in ("2027-06-30", "next year", "2027-06-30T12:00:00"):
        with pytest.raises(SettingsError, match="CONNECTOR_CREDENTIAL_EXPIRES_AT"):
            _settings(bad)


def test_a_daily_timer_runs_the_check() -> None:
    import ast
    from pathlib import Path

    from shared.contracts import ncrontab

    tree = ast.parse((Path(__file__).resolve().parents[2] / "function_app.py").read_text())
    (timer,) = [f for f in tree.body if isinstance(f, ast.AsyncFunctionDef)
                and "credential_expiry.check_connector_secret" in ast.unparse(f)]
    (decorator,) = timer.decorator_list
    assert ast.unparse(decorator.func) == "app.timer_trigger"
    schedule = next(k.value.value for k in decorator.keywords if k.arg == "schedule")
    period = ncrontab.shortest_period(schedule, datetime(2027, 1, 1, tzinfo=UTC))
    assert period is not None and period.total_seconds() == 86400, schedule
