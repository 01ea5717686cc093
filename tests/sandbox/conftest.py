"""One sandbox server per test session (fast timings), re-seeded before every test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from graph_sandbox import SandboxConfig, SandboxServer
from graph_sandbox.config import DEFAULT_APP_ROLES, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, AppRegistration
from graph_sandbox.testing import NotificationReceiver

OTHER_APP = AppRegistration("0therapp-0000-4000-8000-000000000009", "other-secret", ["Calendars.Read"], "Other app")
FAST = SandboxConfig(
    validation_timeout_s=0.5,
    notification_timeout_s=0.3,
    retry_delays_s=(0.05, 0.1, 0.2),
    batch_window_s=0.1,
    expiry_sweep_interval_s=0.05,
    default_page_size=100,
    apps=[AppRegistration(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, list(DEFAULT_APP_ROLES)), OTHER_APP],
)


@pytest.fixture(scope="session")
def _server() -> Iterator[SandboxServer]:
    with SandboxServer(FAST) as server:
        yield server


@pytest.fixture
def sb(_server: SandboxServer) -> SandboxServer:
    _server.seed()  # also clears subscriptions, faults, limits and logs
    return _server


@pytest.fixture
def graph(sb: SandboxServer) -> Iterator[httpx.Client]:
    """An httpx client on ``/v1.0`` with a valid app token."""
    with httpx.Client(base_url=sb.graph_url, headers=sb.graph_headers(), timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[NotificationReceiver]:
    with NotificationReceiver() as r:
        yield r
