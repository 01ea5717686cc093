"""Fixtures of the subscription tests live in tests/conftest.py (app_host, clean_env, sandbox_subscriptions)."""

from tests.conftest import sandbox_subscriptions

__all__ = ["sandbox_subscriptions"]
