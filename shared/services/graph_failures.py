"""How a Microsoft Graph failure leaves the services: ``GraphFailure``.

A service that calls Graph (``shared.adapters.graph``) turns its ``GraphError`` into a ``GraphFailure``: an
``ApiError`` of the catalogue (``shared.contracts.errors``), which an endpoint answers as it is, that also keeps
what Graph said (status, code, ``Retry-After``) for the workers that decide on it (come back later when
throttled, re-create a subscription Graph no longer has). So no endpoint or worker needs the Graph adapter.
"""

from __future__ import annotations

from typing import Any

from shared.adapters.graph import GraphError
from shared.contracts.errors import ApiError


class GraphFailure(ApiError):
    """The catalogue's answer to a Graph failure, with Graph's own status (0: not reached), code and Retry-After."""

    def __init__(self, cause: GraphError, code: str, *, headers: dict[str, str] | None = None,
                 **details: Any) -> None:
        super().__init__(code, headers=headers, **details)
        self.graph_status = cause.status
        self.graph_code = cause.code
        self.retry_after = cause.retry_after
        self.throttled = cause.throttled

    @property
    def unreachable_or_throttled(self) -> bool:
        """Graph asked us to come back later (429/503/504) or could not be reached: worth waiting for."""
        return self.throttled or self.graph_status == 0
