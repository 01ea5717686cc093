"""Settings: read once, validated, and every failure names the setting."""

from __future__ import annotations

import logging

import pytest

from shared.adapters.settings import SPECS, SettingsError, load_settings
from testing.settings import sample_settings


def env(**overrides: str | None) -> dict[str, str]:
    values = sample_settings()
    for name, value in overrides.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def test_sample_settings_load() -> None:
    settings = load_settings(env())
    assert settings.max_flows_per_mailbox == 5
    assert settings.jwks_url == f"http://127.0.0.1:7072/{settings.tenant_id}/discovery/v2.0/keys"
    assert not settings.storage.uses_identity


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MAX_FLOWS_PER_MAILBOX", "five", "MAX_FLOWS_PER_MAILBOX"),
        ("MAX_FLOWS_PER_MAILBOX", "0", "MAX_FLOWS_PER_MAILBOX"),
        ("GRAPH_BASE_URL", "graph.microsoft.com", "GRAPH_BASE_URL"),
        ("GRAPH_BASE_URL", "https://graph.microsoft.com/v1.0?x=1", "GRAPH_BASE_URL"),
        ("RENEWAL_SCHEDULE", "*/30 * * * *", "RENEWAL_SCHEDULE"),
        ("RENEWAL_SCHEDULE", "0 */99 * * * *", "RENEWAL_SCHEDULE"),
        ("OUTBOX_SWEEP_SCHEDULE", "0 61 * * * *", "OUTBOX_SWEEP_SCHEDULE"),
        ("QUEUE_METRICS_SCHEDULE", "0 0 0 L * *", "QUEUE_METRICS_SCHEDULE"),
        ("DIRECTORY_REFRESH_SCHEDULE", "0 */10 * * *", "DIRECTORY_REFRESH_SCHEDULE"),
        ("RESYNC_SCHEDULE", "0 0 0 31 2 *", "RESYNC_SCHEDULE"),
        ("ALLOW_LOOPBACK_CALLBACKS", "maybe", "ALLOW_LOOPBACK_CALLBACKS"),
        ("CALLBACK_HOST_ALLOWLIST", "https://evil.example/x", "CALLBACK_HOST_ALLOWLIST"),
        ("GRAPH_CREDENTIAL", "password", "GRAPH_CREDENTIAL"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL"),
        ("AzureWebJobsStorage", "not a connection string", "AzureWebJobsStorage"),
        ("AUTH_JWKS_URL", "not a url {tenant}", "AUTH_JWKS_URL"),
        ("AUTH_SCOPE", "api://bookings-triggers-local/user_impersonation", "AUTH_SCOPE"),
        ("AUTH_SCOPE", "user_impersonation openid", "AUTH_SCOPE"),
        ("AUTH_ALLOWED_CLIENT_IDS", "the-connector", "AUTH_ALLOWED_CLIENT_IDS"),
        ("AUTH_ALLOWED_CLIENT_IDS", "c0ec7000-0000-4000-8000-000000000003;0f1e2d3c-4b5a-4697-8877-665544332211",
         "AUTH_ALLOWED_CLIENT_IDS"),
        ("AUTH_ALLOWED_CLIENT_IDS", " , ", "AUTH_ALLOWED_CLIENT_IDS"),
    ],
)
def test_malformed_setting_is_named(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        load_settings(env(**{name: value}))


@pytest.mark.parametrize("name", ["ENTRA_TENANT_ID", "AUTH_AUDIENCE", "AUTH_ALLOWED_CLIENT_IDS", "AzureWebJobsStorage"])
def test_missing_required_setting_is_named(name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(env(**{name: None}))


def test_token_scope_and_clients() -> None:
    settings = load_settings(env(AUTH_SCOPE=None))
    assert settings.auth_scope == "user_impersonation"  # what infra/entra/graph.bicep exposes
    settings = load_settings(env(AUTH_ALLOWED_CLIENT_IDS=" {C0EC7000-0000-4000-8000-000000000003}, "
                                 "0f1e2d3c-4b5a-4697-8877-665544332211,c0ec7000-0000-4000-8000-000000000003 "))
    assert settings.auth_allowed_client_ids == ("c0ec7000-0000-4000-8000-000000000003",
                                                 "0f1e2d3c-4b5a-4697-8877-665544332211")


def test_identity_based_storage() -> None:
    settings = load_settings(env(
        AzureWebJobsStorage=None,
        AzureWebJobsStorage__tableServiceUri="https://acct.table.core.windows.net/",
        AzureWebJobsStorage__queueServiceUri="https://acct.queue.core.windows.net",
        AzureWebJobsStorage__clientId="1234",
    ))
    assert settings.storage.uses_identity
    assert settings.storage.table_service_uri == "https://acct.table.core.windows.net"
    assert settings.storage.client_id == "1234"


def test_identity_based_storage_needs_both_uris() -> None:
    with pytest.raises(SettingsError, match="AzureWebJobsStorage__queueServiceUri"):
        load_settings(env(AzureWebJobsStorage=None,
                          AzureWebJobsStorage__tableServiceUri="https://acct.table.core.windows.net"))


def test_client_secret_credential_needs_secret() -> None:
    with pytest.raises(SettingsError, match="GRAPH_CLIENT_SECRET"):
        load_settings(env(GRAPH_CLIENT_SECRET=""))


def test_public_base_url_falls_back_to_website_hostname() -> None:
    settings = load_settings(env(PUBLIC_BASE_URL=None, WEBSITE_HOSTNAME="app.azurewebsites.net"))
    assert settings.public_base_url == "https://app.azurewebsites.net"
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
        load_settings(env(PUBLIC_BASE_URL=None))


def test_secrets_are_not_in_repr() -> None:
    text = repr(load_settings(env()))
    assert "local-sandbox-secret" not in text
    assert "AccountKey" not in text


def test_every_setting_is_documented_in_sample_and_readme(repo_root) -> None:
    sample = sample_settings()
    readme = (repo_root / "docs" / "configuration.md").read_text()
    for spec in SPECS:
        assert spec.name in readme, f"{spec.name} is not documented in docs/configuration.md"
        assert spec.name in sample, f"{spec.name} has no value in local.settings.sample.json"


def test_ncrontab_schedules_are_checked_as_the_host_reads_them() -> None:
    settings = load_settings(env(OUTBOX_SWEEP_SCHEDULE="0 */5 * * * *", RENEWAL_SCHEDULE="0 0 9-17/2 * * Mon-Fri"))
    assert (settings.outbox_sweep_schedule, settings.renewal_schedule) == ("0 */5 * * * *", "0 0 9-17/2 * * Mon-Fri")
    with pytest.raises(SettingsError, match=r"RENEWAL_SCHEDULE .*step 99 is outside 1-59.*'0 \*/99 \* \* \* \*'"):
        load_settings(env(RENEWAL_SCHEDULE="0 */99 * * * *"))


def test_resync_spread_is_shorter_than_the_resync_period() -> None:
    assert load_settings(env(RESYNC_SCHEDULE="0 0 * * * *", RESYNC_SPREAD_MINUTES="59")).resync_spread_minutes == 59
    assert load_settings(env(RESYNC_SCHEDULE="0 */5 * * * *", RESYNC_SPREAD_MINUTES="0")).resync_spread_minutes == 0
    with pytest.raises(SettingsError, match=r"RESYNC_SPREAD_MINUTES \(60\) must be shorter .* \(60 minutes"):
        load_settings(env(RESYNC_SCHEDULE="0 0 * * * *", RESYNC_SPREAD_MINUTES="60"))
    # The shortest gap counts: at 09:00 and 17:00 the runs are 8 and 16 hours apart.
    with pytest.raises(SettingsError, match="RESYNC_SPREAD_MINUTES"):
        load_settings(env(RESYNC_SCHEDULE="0 0 9,17 * * *", RESYNC_SPREAD_MINUTES="600"))
    twice_a_day = load_settings(env(RESYNC_SCHEDULE="0 0 9,17 * * *", RESYNC_SPREAD_MINUTES="479"))
    assert twice_a_day.resync_spread_minutes == 479


def test_retired_token_url_is_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.adapters.settings"):
        load_settings(env())
    assert not caplog.records
    # An upgrading deployment may still carry it, even malformed: it is no longer read, only pointed out.
    secret_looking = "https://login.example/{tenant}/token?client_secret=local-sandbox-secret"
    with caplog.at_level(logging.WARNING, logger="shared.adapters.settings"):
        settings = load_settings(env(ENTRA_TOKEN_URL=secret_looking))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "ENTRA_TOKEN_URL is no longer read" in message and "ENTRA_AUTHORITY" in message
    assert "local-sandbox-secret" not in message and "login.example" not in message
    assert not hasattr(settings, "token_url")
    assert "ENTRA_TOKEN_URL" not in {spec.name for spec in SPECS}
    assert "ENTRA_TOKEN_URL" not in sample_settings()


def test_settings_fields_are_the_specs() -> None:
    from dataclasses import fields

    from shared.adapters.settings import Settings

    assert [spec.attribute for spec in SPECS] == [f.name for f in fields(Settings) if f.name != "storage"]
    assert [spec.name for spec in SPECS if spec.secret] == ["GRAPH_CLIENT_SECRET", "API_CLIENT_SECRET"]
