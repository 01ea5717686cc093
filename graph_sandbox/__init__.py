"""A local stand-in for Microsoft Graph (Bookings, calendar events, subscriptions and change
notifications) and Entra ID (discovery, JWKS, client-credentials and user tokens), modelled on their
documentation. ``python -m graph_sandbox`` serves it; ``SandboxServer`` runs it inside tests.
"""

from .app import Sandbox, build_app
from .config import SandboxConfig
from .testing import SandboxServer

__all__ = ["Sandbox", "SandboxConfig", "SandboxServer", "build_app"]
