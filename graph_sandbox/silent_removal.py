"""``DELETE /_sandbox/subscriptions/{id}``: Graph removes a subscription without a word.

Graph may remove a subscription (the ``subscriptionRemoved`` lifecycle notification says so), and that
notification can be lost like any other
(https://learn.microsoft.com/en-us/graph/change-notifications-lifecycle-events). This control route is that
case: the subscription is gone from ``GET /v1.0/subscriptions`` and answers 404, and nobody is told.
``POST /_sandbox/subscriptions/{id}/lifecycle`` with ``subscriptionRemoved`` is the announced removal.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def remove_silently(request: Request) -> Response:
    subscriptions = request.app.state.sandbox.state.subscriptions
    sub = subscriptions.pop(request.path_params["sub_id"], None)
    if sub is None:
        return JSONResponse({"error": "no such subscription"}, status_code=404)
    return JSONResponse({"subscriptionId": sub.id, "mailbox": sub.mailbox, "notified": False})


routes = [Route("/_sandbox/subscriptions/{sub_id}", remove_silently, methods=["DELETE"])]
