"""Every setting the app reads: names, defaults, validation, and the one place they are read.

Settings come from the process environment. Locally `local.settings.json` ``Values`` feed it (the
local host copies them in, and a variable already set in the environment wins, as with ``func start``);
on Azure they are the Function App's app settings, declared in ``infra/``.

Each setting is listed once, as a field of ``Settings`` whose ``_setting(...)`` names the environment
variable, its default, its parser and its description; ``SPECS`` is derived from those fields. The
configuration table (docs/configuration.md) and the infra tests are checked against ``SPECS``, so a setting
added here without documentation or without an app setting in Bicep fails the tests.

``get_settings()`` reads and validates them once per process. A bad value raises ``SettingsError``
naming the setting, at start-up rather than on the first request that needs it: NCRONTAB schedules are
checked as the Functions host reads them (``shared.contracts.ncrontab``), and ``RESYNC_SPREAD_MINUTES``
against the resync schedule's period.

Why not pydantic-settings: this module is read at every cold start (``function_app`` imports it), and
importing pydantic-settings costs 0.17-0.19 s there (measured after ``import function_app``), a third of
the 0.5 s import target that ``python -m bench.cold_start`` already nearly fills; the dataclass costs nothing.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from shared.contracts import ncrontab

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A setting is missing or malformed. The message names the setting and says what is expected."""


@dataclass(frozen=True)
class SettingSpec:
    name: str
    default: str | None  # None: required
    description: str
    parse: Callable[[str, str], Any]
    attribute: str  # the field of Settings
    secret: bool = False  # never printed, never logged


# --- parsers: each takes (name, raw) and returns the value or raises SettingsError -------------------


def _stripped(name: str, raw: str) -> str:
    return raw.strip()


def _text(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise SettingsError(f"Setting {name} is empty; give it a value or remove it to use the default.")
    return value


def _url(name: str, raw: str) -> str:
    value = _text(name, raw).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"Setting {name} must be an absolute http(s) URL, got {value!r}.")
    if parts.query or parts.fragment:
        raise SettingsError(f"Setting {name} must not carry a query string or fragment.")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"Setting {name} must be a whole number, got {raw!r}.") from None
    if value < 1:
        raise SettingsError(f"Setting {name} must be at least 1, got {value}.")
    return value


def _whole_number(name: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"Setting {name} must be a whole number, got {raw!r}.") from None
    if value < 0:
        raise SettingsError(f"Setting {name} must not be negative, got {value}.")
    return value


def _log_days(name: str, raw: str) -> int:
    """1 to 90 days: listing a flow's deliveries reads one partition per day of it."""
    value = _positive_int(name, raw)
    if value > 90:
        raise SettingsError(f"Setting {name} must be at most 90 (days), got {value}.")
    return value


def _ratio(name: str, raw: str) -> float:
    """A share in (0, 1]: 0 would drop every trace, and above 1 means nothing."""
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"Setting {name} must be a number between 0 and 1, got {raw!r}.") from None
    if not 0 < value <= 1:
        raise SettingsError(f"Setting {name} must be above 0 and at most 1, got {raw!r}.")
    return value


def _positive_number(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"Setting {name} must be a number, got {raw!r}.") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"Setting {name} must be a positive number, got {raw!r}.")
    return value


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"Setting {name} must be true or false, got {raw!r}.")


def _host_list(name: str, raw: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    for host in hosts:
        bare = host[2:] if host.startswith("*.") else host
        if not bare or "*" in bare or "/" in bare or ":" in bare:
            raise SettingsError(
                f"Setting {name}: {host!r} is not a host name or a '*.domain' wildcard "
                "(no scheme, port or path)."
            )
    return hosts


def _scope_name(name: str, raw: str) -> str:
    value = _text(name, raw)
    if any(ch.isspace() for ch in value) or "/" in value:
        raise SettingsError(
            f"Setting {name} must be one scope's name as tokens carry it in 'scp' (e.g. user_impersonation), "
            f"not a list or the full api://… scope, got {value!r}."
        )
    return value


def _client_ids(name: str, raw: str) -> tuple[str, ...]:
    entries = [e.strip() for e in raw.split(",") if e.strip()]
    if not entries:
        raise SettingsError(f"Setting {name} must list at least one application (client) id.")
    ids: list[str] = []
    for entry in entries:
        try:
            ids.append(str(uuid.UUID(entry)))  # canonical lower-case form, as 'azp' and 'appid' carry it
        except ValueError:
            raise SettingsError(
                f"Setting {name}: {entry!r} is not an application (client) id (a GUID); separate ids with commas."
            ) from None
    return tuple(dict.fromkeys(ids))


def _ncrontab(name: str, raw: str) -> str:
    value = _text(name, raw)
    if len(value.split()) != 6:
        raise SettingsError(
            f"Setting {name} must be a 6-field NCRONTAB expression "
            f"(second minute hour day month day-of-week), got {value!r}."
        )
    try:
        ncrontab.check(value)
    except ncrontab.NcrontabError as error:
        raise SettingsError(f"Setting {name} is not an NCRONTAB expression the Functions host runs: {error}; "
                            f"got {value!r}.") from None
    return value


def _log_level(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"Setting {name} must be DEBUG, INFO, WARNING or ERROR, got {raw!r}.")
    return value


def _graph_credential(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("managedidentity", "clientsecret"):
        raise SettingsError(f"Setting {name} must be 'managedidentity' or 'clientsecret', got {raw!r}.")
    return value


def _api_credential(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("federated", "clientsecret"):
        raise SettingsError(f"Setting {name} must be 'federated' or 'clientsecret', got {raw!r}.")
    return value


def _https_url(name: str, raw: str) -> str:
    value = _url(name, raw)
    if not value.lower().startswith("https://"):
        raise SettingsError(f"Setting {name} must be an https URL (Microsoft's token libraries refuse others), "
                            f"got {raw!r}.")
    return value


def _utc_timestamp(name: str, raw: str) -> str:
    """An ISO 8601 instant with its offset (``Z`` or ``+00:00``), as UTC ``YYYY-MM-DDTHH:MM:SSZ``."""
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise SettingsError(f"Setting {name} must be an ISO 8601 time with its offset, e.g. 2027-06-30T12:00:00Z, "
                            f"got {raw!r}.")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _setting(name: str, default: str | None, parse: Callable[[str, str], Any], description: str, *,
             secret: bool = False, in_repr: bool = True) -> Any:
    """A field of ``Settings`` read from the environment variable ``name`` (its ``SettingSpec``). Secrets
    are never in the repr; ``in_repr=False`` keeps out a value that is no secret but need not be in logs either."""
    spec = SettingSpec(name, default, description, parse, attribute="", secret=secret)
    return field(repr=in_repr and not secret, metadata={"setting": spec})


# Storage is not in SPECS: it has two shapes (connection string or identity URIs) and is read by
# ``_storage`` below. The names are the Functions runtime's own, so the host and the app share them.
STORAGE_CONNECTION = "AzureWebJobsStorage"
STORAGE_TABLE_URI = "AzureWebJobsStorage__tableServiceUri"
STORAGE_QUEUE_URI = "AzureWebJobsStorage__queueServiceUri"
STORAGE_CLIENT_ID = "AzureWebJobsStorage__clientId"
STORAGE_BLOB_URI = "AzureWebJobsStorage__blobServiceUri"  # the runtime's too; the app's flow exports use it

@dataclass(frozen=True)
class StorageSettings:
    """Either a connection string (Azurite, local) or service URIs used with an Entra credential (Azure)."""

    connection_string: str | None = field(default=None, repr=False)
    table_service_uri: str | None = None
    queue_service_uri: str | None = None
    blob_service_uri: str | None = None  # only the flow export needs blobs (shared.adapters.blobs)
    client_id: str | None = None  # user-assigned managed identity; None = DefaultAzureCredential's choice

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


@dataclass(frozen=True)
class Settings:
    """The app's settings, in the order they are read and validated. ``issuer`` and ``jwks_url`` are read
    as templates; ``{tenant}`` becomes ``tenant_id``."""

    storage: StorageSettings
    tenant_id: str = _setting("ENTRA_TENANT_ID", None, _text,
        "Directory (tenant) id of the Entra ID tenant the app and its callers live in.")
    graph_base_url: str = _setting("GRAPH_BASE_URL", "https://graph.microsoft.com/v1.0", _url,
        "Microsoft Graph endpoint, version included. Locally the Graph sandbox.")
    graph_credential: str = _setting("GRAPH_CREDENTIAL", "managedidentity", _graph_credential,
        "How the app gets Graph tokens: 'managedidentity' (Azure, no secret) or 'clientsecret' (client "
        "credentials against ENTRA_AUTHORITY; the sandbox).")
    graph_client_id: str = _setting("GRAPH_CLIENT_ID", "", _stripped,
        "Client id for Graph tokens: the app registration (clientsecret) or the user-assigned managed identity "
        "(managedidentity; empty means system-assigned).")
    graph_client_secret: str = _setting("GRAPH_CLIENT_SECRET", "", _stripped,
        "Client secret, only with GRAPH_CREDENTIAL=clientsecret. Never set on Azure.", secret=True)
    graph_scope: str = _setting("GRAPH_SCOPE", "https://graph.microsoft.com/.default", _text,
        "Scope requested for Graph app tokens.")
    api_client_id: str = _setting("API_CLIENT_ID", "", _stripped,
        "Client id of the API app registration (the one whose Application ID URI is AUTH_AUDIENCE): it exchanges "
        "a caller's token for a Graph token on the caller's behalf (on-behalf-of). Empty: GRAPH_CLIENT_ID, when "
        "one registration plays both parts (locally).")
    api_credential: str = _setting("API_CREDENTIAL", "federated", _api_credential,
        "How the API app registration proves itself in the on-behalf-of exchange: 'federated' (Azure: the managed"
        " identity GRAPH_CLIENT_ID's token for api://AzureADTokenExchange is the client assertion, no secret "
        "anywhere) or 'clientsecret' (API_CLIENT_SECRET; the sandbox).")
    api_client_secret: str = _setting("API_CLIENT_SECRET", "", _stripped,
        "The API app registration's client secret, only with API_CREDENTIAL=clientsecret. Empty: "
        "GRAPH_CLIENT_SECRET. Never set on Azure.", secret=True)
    entra_authority: str = _setting("ENTRA_AUTHORITY", "https://login.microsoftonline.com", _https_url,
        "Entra authority for token requests with a client secret and on behalf of callers (https only, as "
        "Microsoft's token libraries require). Locally the sandbox's HTTPS listener.")
    entra_ca_file: str = _setting("ENTRA_CA_FILE", "", _stripped,
        "A PEM certificate to trust for ENTRA_AUTHORITY besides the system's: the local sandbox's self-signed "
        "one. Never set on Azure.")
    issuer: str = _setting("AUTH_ISSUER", "https://login.microsoftonline.com/{tenant}/v2.0", _text,
        "Expected 'iss' of callers' bearer tokens; '{tenant}' is replaced by ENTRA_TENANT_ID.")
    audience: str = _setting("AUTH_AUDIENCE", None, _text,
        "Expected 'aud' of callers' bearer tokens: the API app registration's application id URI or client id.")
    jwks_url: str = _setting("AUTH_JWKS_URL", "https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys", _text,
        "Signing keys of the token issuer; '{tenant}' is replaced by ENTRA_TENANT_ID.")
    auth_scope: str = _setting("AUTH_SCOPE", "user_impersonation", _scope_name,
        "Delegated scope of the API app registration that callers' tokens must carry in 'scp' (the scope "
        "infra/entra/graph.bicep exposes).")
    auth_allowed_client_ids: tuple[str, ...] = _setting("AUTH_ALLOWED_CLIENT_IDS", None, _client_ids,
        "Application (client) ids, comma-separated, whose user tokens the API accepts (the 'azp' claim, 'appid' "
        "in v1.0 tokens): the custom connector's app registration. On Azure set from the Entra module.")
    public_base_url: str = _setting("PUBLIC_BASE_URL", "", lambda n, r: _url(n, r) if r.strip() else "",
        "Public base URL of this app. Graph posts notifications under it and Location headers point at it. Empty:"
        " https://$WEBSITE_HOSTNAME, which Azure sets on every Function App.")
    max_flows_per_mailbox: int = _setting("MAX_FLOWS_PER_MAILBOX", "5", _positive_int,
        "Flows (appointment triggers) allowed per Bookings mailbox, as Microsoft's connector allows.")
    callback_host_allowlist: tuple[str, ...] = _setting(
        "CALLBACK_HOST_ALLOWLIST",
        "*.logic.azure.com,*.logic.azure.us,*.logic.azure.cn,*.flow.microsoft.com,*.powerautomate.com", _host_list,
        "Hosts flow callback URLs may point at; '*.domain' allows its subdomains.")
    allow_loopback_callbacks: bool = _setting("ALLOW_LOOPBACK_CALLBACKS", "false", _bool,
        "Local demo only: accept http callbacks on 127.0.0.1. Never true on Azure.")
    renewal_schedule: str = _setting("RENEWAL_SCHEDULE", "0 */30 * * * *", _ncrontab,
        "NCRONTAB schedule of the subscription renewal timer.")
    renewal_window_minutes: int = _setting("RENEWAL_WINDOW_MINUTES", "1440", _positive_int,
        "The renewal timer renews subscriptions expiring within this many minutes (Graph allows 4,230 minutes of "
        "life).")
    subscription_writes_per_second: int = _setting("SUBSCRIPTION_WRITES_PER_SECOND", "24", _positive_int,
        "Pace of the renewal sweep's subscription writes, just below Graph's 500 writes per 20 s per app (25/s); "
        "a sweep is rarely that large, and a new flow that meets the limit is told when to retry.")
    resync_schedule: str = _setting("RESYNC_SCHEDULE", "0 0 */6 * * *", _ncrontab,
        "NCRONTAB schedule of the periodic full resync of every mailbox: the safety net behind the notifications "
        "and the delta check (docs/architecture.md).")
    resync_spread_minutes: int = _setting("RESYNC_SPREAD_MINUTES", "50", _whole_number,
        "The periodic resync spreads its mailboxes' full resyncs evenly over this many minutes (queue visibility "
        "delays) instead of starting them all at once (0: all at once). Checked at start-up: it must be shorter "
        "than the shortest gap between two RESYNC_SCHEDULE runs.")
    resync_horizon_days: int = _setting("RESYNC_HORIZON_DAYS", "180", _positive_int,
        "How many days ahead a full resync compares appointments (and catches changes Graph never notified).")
    resync_past_days: int = _setting("RESYNC_PAST_DAYS", "7", _positive_int,
        "How many days back a full resync looks; older appointments leave the snapshot silently.")
    delta_check_schedule: str = _setting("DELTA_CHECK_SCHEDULE", "0 */4 * * * *", _ncrontab,
        "NCRONTAB schedule of the delta check: one Graph delta query per mailbox on its calendar view, so a change "
        "whose notification never came is reconciled within one period plus the run (docs/architecture.md). One "
        "Graph request per mailbox per run.")
    delivery_retry_hours: float = _setting("DELIVERY_RETRY_HOURS", "24", _positive_number,
        "How long a delivery to a flow is retried (429, 5xx, timeouts), counted from its first attempt, before it"
        " becomes a dead letter. Decimals allowed.")
    outbox_retention_hours: float = _setting("OUTBOX_RETENTION_HOURS", "168", _positive_number,
        "How long an appointment event is kept after it was handed to its flows (never less than "
        "DELIVERY_RETRY_HOURS + 1 h, and never while it has dead letters).")
    dead_letter_retention_days: float = _setting("DEAD_LETTER_RETENTION_DAYS", "30", _positive_number,
        "How long a dead letter is kept for an administrator to replay (also one whose flow was removed since); "
        "then it is deleted, said in the log, and its event is pruned with it when no other dead letter needs it.")
    delivery_log_retention_days: int = _setting("DELIVERY_LOG_RETENTION_DAYS", "7", _log_days,
        "How many days of deliveries List deliveries of a flow shows (1 to 90); the outbox sweep deletes older days "
        "of the delivery log.")
    outbox_sweep_schedule: str = _setting("OUTBOX_SWEEP_SCHEDULE", "0 */5 * * * *", _ncrontab,
        "NCRONTAB schedule of the outbox sweep: hands events left pending by a crash to their flows, and prunes "
        "delivered ones.")
    reminder_schedule: str = _setting("REMINDER_SCHEDULE", "0 * * * * *", _ncrontab,
        "NCRONTAB schedule of the time-relative triggers' timer (about to start, has ended). Each run fires what is "
        "due until the next run, each at its instant; every minute as on Azure by default (tests run it every few "
        "seconds).")
    directory_refresh_schedule: str = _setting("DIRECTORY_REFRESH_SCHEDULE", "0 */10 * * * *", _ncrontab,
        "NCRONTAB schedule of the directory refresh: every business's administrators re-read for the connector's "
        "business dropdown. A staff change reaches the dropdown within one period plus one run (docs/api.md).")
    queue_metrics_schedule: str = _setting("QUEUE_METRICS_SCHEDULE", "0 */5 * * * *", _ncrontab,
        "NCRONTAB schedule of the poison queues' length metric (poison_queue_length), which the poison-queue-"
        "length alert watches.")
    connector_credential_expires_at: str = _setting("CONNECTOR_CREDENTIAL_EXPIRES_AT", "", _utc_timestamp,
        "When the connector client's secret expires (ISO 8601), as scripts/connector-secret.sh recorded it. A daily "
        "check emits ConnectorSecretExpiring from 30 days before (the connector-secret-expiring alert). Empty: not "
        "recorded, a warning in the log each day.")
    backup_schedule: str = _setting("BACKUP_SCHEDULE", "0 30 2 * * *", _ncrontab,
        "NCRONTAB schedule of the export of every flow registration to the flow-backups blob container (what "
        "scripts/restore-flows.sh restores from). Default daily at 02:30 UTC.")
    health_timeout_seconds: int = _setting("HEALTH_TIMEOUT_SECONDS", "3", _positive_int,
        "How long /api/health waits for each dependency.")
    log_level: str = _setting("LOG_LEVEL", "INFO", _log_level,
        "Level of the app's own logs: DEBUG, INFO, WARNING or ERROR.")
    telemetry_sampling_ratio: float = _setting("TELEMETRY_SAMPLING_RATIO", "0.01", _ratio,
        "Share of traces (an HTTP answer or queue message with its storage and HTTP dependencies, and its INFO log "
        "lines) exported to Application Insights, above 0 and at most 1. Custom events, metrics, warnings and errors "
        "are always exported, so every alert sees them; a 5xx answer is also a RequestFailed event.")
    appinsights_connection_string: str = _setting("APPLICATIONINSIGHTS_CONNECTION_STRING", "", _stripped,
        "Application Insights connection string; telemetry export is on when set. Holds no secret with local auth"
        " disabled (Entra auth).", in_repr=False)


SPECS: tuple[SettingSpec, ...] = tuple(
    replace(f.metadata["setting"], attribute=f.name) for f in fields(Settings) if "setting" in f.metadata
)
_TENANT_TEMPLATES = ("issuer", "jwks_url")
# Read by earlier versions; an upgrading deployment or an operator's local.settings.json may still set it.
RETIRED_SETTINGS = {"ENTRA_TOKEN_URL": "token requests go to ENTRA_AUTHORITY"}


def _storage(env: Mapping[str, str]) -> StorageSettings:
    conn = env.get(STORAGE_CONNECTION, "").strip()
    table_uri = env.get(STORAGE_TABLE_URI, "").strip()
    queue_uri = env.get(STORAGE_QUEUE_URI, "").strip()
    if conn:
        if "AccountName=" not in conn and "UseDevelopmentStorage=true" not in conn:
            raise SettingsError(
                f"Setting {STORAGE_CONNECTION} is not a storage connection string "
                "(expected 'DefaultEndpointsProtocol=…;AccountName=…;…' or 'UseDevelopmentStorage=true')."
            )
        return StorageSettings(connection_string=conn)
    if table_uri or queue_uri:
        for name, value in ((STORAGE_TABLE_URI, table_uri), (STORAGE_QUEUE_URI, queue_uri)):
            if not value:
                raise SettingsError(
                    f"Setting {name} is missing: identity-based storage needs both {STORAGE_TABLE_URI} "
                    f"and {STORAGE_QUEUE_URI}."
                )
            _url(name, value)
        client_id = env.get(STORAGE_CLIENT_ID, "").strip() or None
        blob_uri = env.get(STORAGE_BLOB_URI, "").strip()
        if blob_uri:
            _url(STORAGE_BLOB_URI, blob_uri)
        return StorageSettings(table_service_uri=table_uri.rstrip("/"), queue_service_uri=queue_uri.rstrip("/"),
                               blob_service_uri=blob_uri.rstrip("/") or None, client_id=client_id)
    raise SettingsError(
        f"Storage is not configured: set {STORAGE_CONNECTION} to a connection string (local, Azurite) or "
        f"{STORAGE_TABLE_URI} and {STORAGE_QUEUE_URI} (Azure, managed identity)."
    )


def _read(env: Mapping[str, str]) -> dict[str, Any]:
    """Every ``SPECS`` setting parsed (its default when unset), in order; the first bad one raises."""
    values: dict[str, Any] = {}
    for spec in SPECS:
        raw = env.get(spec.name)
        if raw is None or (raw.strip() == "" and spec.default is not None):
            if spec.default is None:
                raise SettingsError(f"Setting {spec.name} is required and not set: {spec.description}")
            raw = spec.default
        values[spec.attribute] = spec.parse(spec.name, raw) if raw != "" else ""
    for attribute in _TENANT_TEMPLATES:
        values[attribute] = values[attribute].replace("{tenant}", values["tenant_id"])
    _url("AUTH_JWKS_URL", values["jwks_url"])
    return values


def _credentials(values: dict[str, Any]) -> None:
    """The secrets the chosen credentials need; the API's client id and secret default to Graph's."""
    needs_secret = values["graph_credential"] == "clientsecret"
    if needs_secret and not (values["graph_client_id"] and values["graph_client_secret"]):
        raise SettingsError(
            "Setting GRAPH_CLIENT_SECRET (and GRAPH_CLIENT_ID) must be set when GRAPH_CREDENTIAL=clientsecret."
        )
    # Locally one app registration is both the Graph client and the API the connector signs in to.
    values["api_client_id"] = values["api_client_id"] or values["graph_client_id"]
    if values["api_credential"] == "clientsecret":
        values["api_client_secret"] = values["api_client_secret"] or values["graph_client_secret"]
        if not values["api_client_secret"]:
            raise SettingsError("Setting API_CLIENT_SECRET (or GRAPH_CLIENT_SECRET) must be set when "
                                "API_CREDENTIAL=clientsecret.")


def _public_base_url(values: dict[str, Any], env: Mapping[str, str]) -> None:
    if not values["public_base_url"]:
        hostname = env.get("WEBSITE_HOSTNAME", "").strip()
        if not hostname:
            raise SettingsError("Setting PUBLIC_BASE_URL is not set, and neither is WEBSITE_HOSTNAME (which Azure "
                                "sets): give the app's public base URL, e.g. https://<app>.azurewebsites.net.")
        values["public_base_url"] = _url("WEBSITE_HOSTNAME", f"https://{hostname}")


def _resync_spread(values: dict[str, Any]) -> None:
    """RESYNC_SPREAD_MINUTES shorter than RESYNC_SCHEDULE's period (its shortest gap between two runs), as its
    description asks: otherwise one resync's hints are still waiting out their delays when the next comes."""
    spread = values["resync_spread_minutes"]
    period = ncrontab.shortest_period(values["resync_schedule"], datetime.now(UTC))
    if spread and period is not None and spread * 60 >= period.total_seconds():
        raise SettingsError(
            f"Setting RESYNC_SPREAD_MINUTES ({spread}) must be shorter than the RESYNC_SCHEDULE period "
            f"({period.total_seconds() / 60:g} minutes between runs of {values['resync_schedule']!r})."
        )


def _warn_retired(env: Mapping[str, str]) -> None:
    """One warning per retired setting still set: harmless, but an operator editing it would expect an effect."""
    for name, instead in RETIRED_SETTINGS.items():
        if name in env:
            log.warning("Setting %s is no longer read (%s); remove it.", name, instead)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    _warn_retired(env)
    values = _read(env)
    _credentials(values)
    _public_base_url(values, env)
    _resync_spread(values)
    return Settings(storage=_storage(env), **values)


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read once. Raises ``SettingsError`` naming the first bad setting."""
    global _cached
    if _cached is None:
        _cached = load_settings()
    return _cached


def reset_settings_cache() -> None:
    """Forget the cached settings (tests that change the environment)."""
    global _cached
    _cached = None
