"""The connector client secret's expiry, checked daily: the credential-expiry timer.

Power Automate signs users in to the connector with the connector client app's secret; when it expires every
connection fails to sign in, and nothing in the app's own telemetry would show why. Its expiry is recorded when
the secret is made (``CONNECTOR_CREDENTIAL_EXPIRES_AT``, by ``scripts/connector-secret.sh``), and from
``WARNING_DAYS`` before it this check emits ``ConnectorSecretExpiring`` once a day, which the
connector-secret-expiring alert turns into a notification (rotation: ``scripts/rotate-connector-secret.sh``).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

from shared.adapters.monitoring import correlated, track_event
from shared.adapters.settings import Settings, get_settings
from shared.contracts import events

log = logging.getLogger(__name__)

#: Warn this many days ahead: time for an administrator to rotate, with the overlap the rotation keeps.
WARNING_DAYS = 30


async def check_connector_secret(settings: Settings | None = None, now: datetime | None = None) -> int | None:
    """Emit ``ConnectorSecretExpiring`` when the recorded expiry is within ``WARNING_DAYS``; returns the whole
    days left (negative once expired), or None when no expiry is recorded."""
    settings = settings or get_settings()
    if not settings.connector_credential_expires_at:
        log.warning("CONNECTOR_CREDENTIAL_EXPIRES_AT is not set: the connector secret's expiry cannot be warned of. "
                    "Make the secret with scripts/connector-secret.sh (or rotate-connector-secret.sh), which "
                    "records it.")
        return None
    expires = datetime.fromisoformat(settings.connector_credential_expires_at.replace("Z", "+00:00"))
    days_left = math.floor((expires - (now or datetime.now(UTC))).total_seconds() / 86400)
    if days_left > WARNING_DAYS:
        return days_left
    with correlated():
        level = logging.ERROR if days_left < 0 else logging.WARNING
        track_event(events.CONNECTOR_SECRET_EXPIRING, level, expiresAt=settings.connector_credential_expires_at,
                    daysLeft=days_left)
    return days_left
