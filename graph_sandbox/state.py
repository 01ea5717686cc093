"""The sandbox's whole in-memory world: users, Bookings businesses, calendars, subscriptions, logs.

Objects are kept in Graph's own JSON shape (camelCase dicts) so handlers serve them with little
translation. Nothing is persisted: ``reset()`` empties it, ``demo.seed()`` fills it.
"""

from __future__ import annotations

import base64
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ZERO_GUID = "00000000-0000-0000-0000-000000000000"


def now_utc() -> datetime:
    return datetime.now(UTC)


def graph_timestamp(dt: datetime | None = None) -> str:
    """DateTimeOffset as Graph writes it: UTC, seven fractional digits, ``Z``."""
    dt = (dt or now_utc()).astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


def outlook_id() -> str:
    """An opaque Exchange-style item id. It contains ``=``, ``-`` and ``_`` on purpose: callers must
    URL-encode ids and never parse them."""
    raw = b"\x00\x00\x00\x00" + os.urandom(40)
    return "AAMkAD" + base64.urlsafe_b64encode(raw).decode()


@dataclass
class User:
    id: str
    user_principal_name: str
    display_name: str

    def to_graph(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "displayName": self.display_name,
            "userPrincipalName": self.user_principal_name,
            "mail": self.user_principal_name,
        }


@dataclass
class Business:
    data: dict[str, Any]
    staff: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    questions: dict[str, dict[str, Any]] = field(default_factory=dict)
    appointments: dict[str, dict[str, Any]] = field(default_factory=dict)
    # appointment id -> id of the mirrored event in the business mailbox's calendar
    event_of: dict[str, str] = field(default_factory=dict)

    @property
    def smtp(self) -> str:
        return self.data["id"]


@dataclass
class Subscription:
    data: dict[str, Any]
    mailbox: str  # lower-cased SMTP address of the watched mailbox
    created_by_app: str
    reauthorization_due: datetime | None = None  # set by reauthorizationRequired
    reauthorization_notified: datetime | None = None  # expiry the automatic notice was sent for

    @property
    def id(self) -> str:
        return self.data["id"]

    def expires_at(self) -> datetime:
        return datetime.fromisoformat(self.data["expirationDateTime"])

    def change_types(self) -> set[str]:
        return {c.strip() for c in self.data["changeType"].split(",") if c.strip()}


@dataclass
class State:
    users: dict[str, User] = field(default_factory=dict)  # key: lower-cased UPN
    businesses: dict[str, Business] = field(default_factory=dict)  # key: lower-cased SMTP
    calendars: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # mailbox -> event id -> event
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    cancellations: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.users.clear()
        self.businesses.clear()
        self.calendars.clear()
        self.subscriptions.clear()
        self.cancellations.clear()

    def add_user(self, upn: str, display_name: str, user_id: str | None = None) -> User:
        user = User(user_id or str(uuid.uuid4()), upn, display_name)
        self.users[upn.lower()] = user
        self.calendars.setdefault(upn.lower(), {})
        return user

    def find_user(self, key: str) -> User | None:
        """A user by UPN/SMTP (case-insensitive) or by object id, as Graph's /users/{id|upn}."""
        user = self.users.get(key.lower())
        if user:
            return user
        return next((u for u in self.users.values() if u.id.lower() == key.lower()), None)

    def business(self, smtp: str) -> Business | None:
        return self.businesses.get(smtp.lower())
