"""The app under the local host, its Graph pointed at the sandbox, so the sandbox's handshakes and
notifications reach the app's real endpoints over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shared.settings import reset_settings_cache
from tests.conftest import clean_app_storage, sandbox_settings
from tests.hosting import HostProcess


@pytest.fixture
def app_host(app_host_factory, sandbox, graph_env, azurite, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[HostProcess]:
    clean_app_storage(azurite.connection_string)
    host = app_host_factory(**sandbox_settings(sandbox)).start()
    # In-process code (this test) must build the same notification URLs as the host serves.
    monkeypatch.setenv("PUBLIC_BASE_URL", host.url)
    reset_settings_cache()
    yield host


def sandbox_subscriptions(sandbox: Any) -> list[dict]:
    return list(sandbox.control("GET", "subscriptions")["value"])


@pytest.fixture
def clean_env(graph_env, azurite) -> dict[str, str]:
    """Settings and empty storage, no host running: nothing consumes the queues behind the test's back."""
    clean_app_storage(azurite.connection_string)
    return graph_env
