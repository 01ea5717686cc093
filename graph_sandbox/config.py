"""Settings of one sandbox instance: identities, limits and timings.

Everything a test may want to shrink (handshake timeout, retry back-off, expiry sweep) lives here so
slow Graph behaviour can be reproduced in milliseconds. Defaults are Graph's documented values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_TENANT_ID = "c0a7b00c-0000-4000-8000-000000000001"
DEFAULT_CLIENT_ID = "a99b0000-0000-4000-8000-000000000002"
DEFAULT_CLIENT_SECRET = "local-sandbox-secret"  # noqa: S105 - a published local-only value
DEFAULT_API_AUDIENCE = "api://bookings-triggers-local"
GRAPH_AUDIENCE = "https://graph.microsoft.com"
# What infra/entra/graph.bicep grants the app (infra/README.md, "Microsoft Graph permissions"; tests/infra
# checks both agree): application permissions for reading Bookings and subscribing to the mailboxes' events...
APP_READ_ROLES = ("Bookings.Read.All", "Calendars.Read")
# ...and for the write actions, cancel and create (ENABLE_CANCEL_WITH_REASON), what works under both readings: the
# create page names BookingsAppointment.ReadWrite.All and Bookings.ReadWrite.All; the cancel page
# lists Bookings.ReadWrite.All; the other appointment pages, and what was granted before, say
# BookingsAppointment.ReadWrite.All.
APP_CANCEL_ROLES = ("Bookings.ReadWrite.All", "BookingsAppointment.ReadWrite.All")
# The local stack has the cancel action on: the app registration's roles (admin consent given) by default.
DEFAULT_APP_ROLES = (*APP_READ_ROLES, *APP_CANCEL_ROLES)
# Delegated permissions the app registration is granted (admin consent given) for the on-behalf-of flow.
DEFAULT_DELEGATED_SCOPES = ("Bookings.Read.All", "User.Read")


@dataclass
class AppRegistration:
    """A confidential client that may use the client-credentials and on-behalf-of grants.

    ``identifier_uris`` are its Application ID URIs: a user token for one of them (or for the client id) is
    an assertion this app may exchange on behalf of the user; ``delegated_scopes`` is what that yields."""

    client_id: str
    client_secret: str
    roles: list[str]
    display_name: str = "Bookings triggers (local)"
    identifier_uris: list[str] = field(default_factory=list)
    delegated_scopes: list[str] = field(default_factory=lambda: list(DEFAULT_DELEGATED_SCOPES))


@dataclass
class SandboxConfig:
    tenant_id: str = DEFAULT_TENANT_ID
    api_audience: str = DEFAULT_API_AUDIENCE
    apps: list[AppRegistration] = field(
        default_factory=lambda: [
            AppRegistration(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, list(DEFAULT_APP_ROLES)),
        ]
    )
    seed: bool = True
    token_lifetime_s: int = 3600
    # Graph: the validation response must arrive within 10 s.
    validation_timeout_s: float = 10.0
    # Graph: a notification POST needs a 2xx within 3 s, otherwise it is retried.
    notification_timeout_s: float = 3.0
    # Back-off between delivery attempts of one batch (Graph retries "for up to 4 hours").
    retry_delays_s: tuple[float, ...] = (1.0, 2.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 3600.0, 3600.0)
    # Changes within this window are sent in one POST per notification URL (Graph batches bursts).
    batch_window_s: float = 0.05
    max_batch_size: int = 100
    # Slow-endpoint throttling (webhooks delivery docs): an answer over 2.9 s is slow; after 100 answers, 10 %
    # slow flags the URL (notifications delayed 10 min), 15 % drops them; counts restart every 10 min.
    slow_response_s: float = 2.9
    slow_min_samples: int = 100
    slow_window_s: float = 600.0
    throttled_delay_s: float = 600.0
    # Outlook event subscriptions: at most 4,230 minutes.
    max_event_subscription_minutes: int = 4230
    expiry_sweep_interval_s: float = 1.0
    # Seconds before expiry at which a reauthorizationRequired is sent by itself. Graph documents that it warns
    # before a subscription expires but not when, so this is off (None) unless a test asks for it.
    reauthorization_notice_s: float | None = None
    # After reauthorizationRequired, change notifications pause unless the app reauthorizes in time.
    reauthorization_grace_s: float = 600.0
    # Real Graph requires https; loopback http is allowed here so tests can run receivers locally.
    allow_http_notification_urls: bool = True
    # Outlook usually follows "created" with an "updated" for the same event; model it.
    updated_after_created: bool = True
    default_page_size: int = 100
    # Request and delivery logs keep this many newest entries (enough for a 10,000-subscription bench).
    log_limit: int = 200_000
    # Listing bookingBusinesses app-only: revisions of its page say "Application: Not supported", the page as
    # published now lists Bookings.Read.All. Off: the stricter reading (403), the default; on: the other one.
    # POST /_sandbox/permissions switches it at run time (reset restores this value).
    app_can_list_businesses: bool = False
    # Graph's documented limits. Outlook's per app and mailbox limits are on by default, for the mailbox's calendar
    # and (a Bookings business is a mailbox, and the page says nothing else) its Bookings routes: 4 concurrent
    # requests, 10,000 requests in 10 minutes, 429 + Retry-After beyond
    # (https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits). A test that is about
    # something else turns them off (POST /_sandbox/limits, or mailbox_limits=False); reset restores this value.
    # The subscription write limit is enforced only when switched on.
    mailbox_limits: bool = True
    subscription_write_limit: int = 500
    subscription_write_window_s: float = 20.0
    mailbox_concurrency_limit: int = 4
    mailbox_request_limit: int = 10_000
    mailbox_request_window_s: float = 600.0

    def __post_init__(self) -> None:
        # The default registration is also the API callers sign in to (one registration locally).
        for app in self.apps:
            if app.client_id == DEFAULT_CLIENT_ID and not app.identifier_uris:
                app.identifier_uris = [self.api_audience]

    def app(self, client_id: str) -> AppRegistration | None:
        return next((a for a in self.apps if a.client_id == client_id), None)
