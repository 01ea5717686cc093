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
    # isoformat, not strftime("%Y"): glibc does not zero-pad years before 1000.
    return dt.replace(tzinfo=None, microsecond=0).isoformat() + f".{dt.microsecond:06d}0Z"


def outlook_id() -> str:
    """An opaque Exchange-style item id. It contains ``=``, ``-`` and ``_`` on purpose: callers must
    URL-encode ids and never parse them."""
    raw = b"\x00\x00\x00\x00" + os.urandom(40)
    return "AAMkAD" + base64.urlsafe_b64encode(raw).decode()


@dataclass
class User:
    """A directory user. ``mail`` is the primary SMTP address (the one Bookings staff lists show), which need
    not be the UPN; ``proxyAddresses`` holds ``SMTP:`` (primary) and ``smtp:`` (alias) entries."""

    id: str
    user_principal_name: str
    display_name: str
    mail: str = ""
    proxy_addresses: list[str] = field(default_factory=list)
    user_type: str = "Member"

    def __post_init__(self) -> None:
        self.mail = self.mail or self.user_principal_name
        self.proxy_addresses = self.proxy_addresses or [f"SMTP:{self.mail}"]

    def to_graph(self) -> dict[str, Any]:
        """The properties Graph returns by default; the others (proxyAddresses, userType) need ``$select``."""
        return {
            "id": self.id,
            "displayName": self.display_name,
            "userPrincipalName": self.user_principal_name,
            "mail": self.mail,
        }

    def selectable(self) -> dict[str, Any]:
        return {**self.to_graph(), "proxyAddresses": list(self.proxy_addresses), "userType": self.user_type}


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

    def add_user(self, upn: str, display_name: str, user_id: str | None = None, *, mail: str = "",
                 proxy_addresses: list[str] | None = None, user_type: str = "Member") -> User:
        user = User(user_id or str(uuid.uuid4()), upn, display_name, mail, list(proxy_addresses or []), user_type)
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
