"""Microsoft Graph access: every call the app makes to Graph goes through ``Graph``.

Built on msgraph-sdk, which is imported lazily (first use, never on import of function_app and never on
the notification path: it costs time and memory at cold start). The SDK's request builders and
middleware send the requests; answers come back as Graph's own JSON (dicts, camelCase), which is what
the snapshots store and what ``appointment_data`` maps, with no model round trip.

Where Graph is: ``GRAPH_BASE_URL`` (the Graph sandbox locally, any Graph-compatible service in tests).
Tokens: azure-identity, with the Function App's managed identity (``GRAPH_CREDENTIAL=managedidentity``) or
a client secret against ``ENTRA_AUTHORITY`` (``clientsecret``; locally the sandbox's HTTPS listener, trusted
through ``ENTRA_CA_FILE``). A token is never sent over plain http except to a loopback host.

Retries: reads (GET) go through the SDK's retry handler, which honours ``Retry-After`` on 429/503/504
a bounded number of times. Writes are never retried here — the SDK would retry a subscription POST on
429/503 and could create duplicates — the caller decides, using ``GraphError.retry_after``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from shared.adapters.lazy_imports import lazy, settled
from shared.adapters.per_loop import PerLoop
from shared.adapters.settings import Settings, get_settings

if TYPE_CHECKING:  # the SDK is imported on first use only
    import httpx
    from kiota_abstractions.request_information import RequestInformation
else:
    httpx = lazy("httpx")  # shared.adapters.lazy_imports

PREFER_UNKNOWN_ENUMS = "include-unknown-enum-members"
# Events per page of a delta round (``Prefer: odata.maxpagesize``); Graph does not document a default or maximum.
DELTA_PAGE_SIZE = 100
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class GraphError(Exception):
    """Graph answered with an error, or could not be reached (status 0)."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"Graph {status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after

    @property
    def throttled(self) -> bool:
        return self.status in (429, 503, 504)


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = None
    for key in ("retry-after", "Retry-After"):
        try:
            value = headers.get(key)
        except Exception:
            value = None
        if value:
            break
    if isinstance(value, list | tuple | set):
        value = next(iter(value), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def path_id(value: str) -> str:
    """An id that is about to become one segment of a Graph URL. The SDK's URL templates percent-encode every
    reserved character ("/" "?" "#" "%" and the rest: RFC 6570), but "." and ".." are unreserved: as a segment
    they are dot segments, which URL normalisation removes with the segment before them (RFC 3986, 5.2.4), so
    ``…/appointments/..`` would name the business itself. Refused here as Graph refuses an id it cannot parse
    (the endpoints' own guard, ``shared.endpoints.access.parse_appointment_id``, refuses them first)."""
    if value.strip(".") == "" or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
    return value


class TokenSource:
    """App-only Graph tokens from azure-identity: the Function App's managed identity (``managedidentity``) or
    the app registration's client secret against ``ENTRA_AUTHORITY`` (``clientsecret``). The credential
    caches each token and renews it before it expires; the lock makes concurrent first callers share one
    request."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()
        self._credential: Any = None

    async def token(self) -> str:
        settled()  # no import beside the warm-up's (shared.adapters.lazy_imports)
        from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError

        async with self._lock:
            if self._credential is None:
                self._credential = _app_credential(self._settings)
            try:
                return (await self._credential.get_token(self._settings.graph_scope)).token
            except (ClientAuthenticationError, ServiceRequestError, ServiceResponseError) as error:
                if self._settings.graph_credential == "managedidentity":
                    raise  # the identity endpoint's own error says what is wrong
                if isinstance(error, ClientAuthenticationError):
                    raise GraphError(401, "TokenRequestFailed",
                                     f"the token endpoint refused the app: {_entra_error(error)}") from None
                # An unreachable token endpoint is an unreachable Graph, as for Graph's own requests (send).
                raise GraphError(0, "Unreachable", f"{type(error).__name__}: {error}") from None


def _app_credential(settings: Settings) -> Any:
    settled()  # no import beside the warm-up's (shared.adapters.lazy_imports)
    if settings.graph_credential == "managedidentity":
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=settings.graph_client_id or None)
    from azure.identity.aio import ClientSecretCredential

    # As the on-behalf-of credential does (shared.adapters.on_behalf_of): locally the sandbox's HTTPS listener.
    transport: dict[str, Any] = {"connection_verify": settings.entra_ca_file} if settings.entra_ca_file else {}
    return ClientSecretCredential(settings.tenant_id, settings.graph_client_id, settings.graph_client_secret,
                                  authority=settings.entra_authority, **transport)


def _entra_error(error: Any) -> str:
    """``error: first line of error_description`` from Entra's answer (never the request, which holds the
    secret); the status when the answer is not Entra's JSON."""
    response = getattr(error, "response", None)
    try:
        body = json.loads(response.text())
        return f"{body.get('error')}: {str(body.get('error_description', '')).splitlines()[0]}"
    except (ValueError, AttributeError, IndexError, TypeError):
        return f"HTTP {getattr(response, 'status_code', 0)}"


def _token_provider(source: TokenSource, graph_url: str) -> Any:
    from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator

    host = urlsplit(graph_url).hostname or ""

    class Provider(AccessTokenProvider):
        async def get_authorization_token(self, uri: str, additional_authentication_context: dict | None = None
                                          ) -> str:
            parts = urlsplit(uri)
            if parts.hostname != host:
                return ""  # never hand our token to another host (e.g. a nextLink elsewhere)
            if parts.scheme != "https" and parts.hostname not in LOOPBACK_HOSTS:
                raise GraphError(0, "InsecureGraphUrl", f"refusing to send a token over {parts.scheme}")
            return await source.token()

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return AllowedHostsValidator([host])

    return Provider()


@dataclass
class _Sdk:
    client: Any  # GraphServiceClient
    adapter: Any  # GraphRequestAdapter


class Graph:
    """The app's Graph client. One per event loop (``get_graph()``); cheap to create, SDK loaded lazily."""

    def __init__(self, settings: Settings | None = None, http_client: httpx.AsyncClient | None = None,
                 tokens: Any = None) -> None:
        """``tokens``: anything with ``async token() -> str``; default the app's own (``TokenSource``).
        ``shared.adapters.on_behalf_of`` passes a caller's delegated tokens."""
        self.settings = settings or get_settings()
        self.tokens = tokens or TokenSource(self.settings)
        self._http_client = http_client
        self._sdk: _Sdk | None = None

    def _get_sdk(self) -> _Sdk:
        if self._sdk is None:
            settled()  # no import beside the warm-up's (shared.adapters.lazy_imports)
            from kiota_abstractions.authentication import BaseBearerTokenAuthenticationProvider
            from msgraph import GraphRequestAdapter, GraphServiceClient
            from msgraph_core import GraphClientFactory

            http = GraphClientFactory.create_with_default_middleware(
                client=self._http_client or httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10)))
            auth = BaseBearerTokenAuthenticationProvider(_token_provider(self.tokens, self.settings.graph_base_url))
            adapter = GraphRequestAdapter(auth, client=http)
            adapter.base_url = self.settings.graph_base_url
            self._sdk = _Sdk(GraphServiceClient(request_adapter=adapter), adapter)
        return self._sdk

    @property
    def sdk(self) -> Any:
        return self._get_sdk().client

    # ---- plumbing ----------------------------------------------------------------------------

    async def send(self, info: RequestInformation, *, retry: bool, prefer: str | None = None) -> Any:
        """Send a request built by an SDK request builder; return Graph's JSON (None for 204)."""
        from kiota_abstractions.api_error import APIError
        from kiota_http.middleware.options import RetryHandlerOption
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        if not retry:
            info.add_request_options([RetryHandlerOption(delay=0, max_retries=0, should_retry=False)])
        if prefer:
            info.headers.try_add("Prefer", prefer)
        try:
            raw = await self._get_sdk().adapter.send_primitive_async(info, "bytes", {"XXX": ODataError})
        except ODataError as error:
            main = error.error
            raise GraphError(error.response_status_code or 0, getattr(main, "code", None) or "Unknown",
                             getattr(main, "message", None) or str(error),
                             _retry_after(error.response_headers)) from None
        except APIError as error:
            raise GraphError(error.response_status_code or 0, "Unknown", str(error.message or error)[:300],
                             _retry_after(error.response_headers)) from None
        except httpx.HTTPError as error:
            raise GraphError(0, "Unreachable", f"{type(error).__name__}: {error}") from None
        return json.loads(raw) if raw else None

    async def pages(self, info: RequestInformation, *, prefer: str | None = None,
                    counter: list[int] | None = None) -> AsyncIterator[dict]:
        """Every item of a collection, following ``@odata.nextLink`` (``counter`` gets an entry per page)."""
        from kiota_abstractions.method import Method
        from kiota_abstractions.request_information import RequestInformation

        while True:
            page = await self.send(info, retry=True, prefer=prefer) or {}
            if counter is not None:
                counter.append(1)
            for item in page.get("value", []):
                yield item
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return
            info = RequestInformation(Method.GET)
            info.url = next_link

    def _business(self, mailbox: str) -> Any:
        # The SDK's URL template percent-encodes path parameters itself (RFC 6570: "a+b@x" -> "a%2Bb%40x"):
        # it gets the address as it is, so Graph sees it encoded exactly once.
        return self.sdk.solutions.booking_businesses.by_booking_business_id(mailbox)

    # ---- Bookings ---------------------------------------------------------------------------

    async def list_businesses(self) -> list[dict]:
        return [b async for b in self.pages(self.sdk.solutions.booking_businesses.to_get_request_information())]

    async def get_business(self, mailbox: str) -> dict:
        """Raises GraphError 404 for an unknown business."""
        return await self.send(self._business(mailbox).to_get_request_information(), retry=True)

    async def list_staff(self, mailbox: str) -> list[dict]:
        """Staff with their real roles: ``scheduler`` and ``teamMember`` need the Prefer header."""
        info = self._business(mailbox).staff_members.to_get_request_information()
        return [s async for s in self.pages(info, prefer=PREFER_UNKNOWN_ENUMS)]

    async def list_services(self, mailbox: str) -> list[dict]:
        return [s async for s in self.pages(self._business(mailbox).services.to_get_request_information())]

    async def list_custom_questions(self, mailbox: str) -> list[dict]:
        return [q async for q in self.pages(self._business(mailbox).custom_questions.to_get_request_information())]

    async def calendar_view(self, mailbox: str, start: datetime, end: datetime) -> list[dict]:
        return (await self.calendar_view_pages(mailbox, start, end))[0]

    async def calendar_view_pages(self, mailbox: str, start: datetime, end: datetime) -> tuple[list[dict], int]:
        """The business's appointments between ``start`` and ``end``, and how many pages (requests) they took."""
        from msgraph.generated.solutions.booking_businesses.item.calendar_view.calendar_view_request_builder import (
            CalendarViewRequestBuilder,
        )

        query = CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
            start=start.isoformat().replace("+00:00", "Z"), end=end.isoformat().replace("+00:00", "Z"))
        config = CalendarViewRequestBuilder.CalendarViewRequestBuilderGetRequestConfiguration(query_parameters=query)
        info = self._business(mailbox).calendar_view.to_get_request_information(config)
        counter: list[int] = []
        items = [a async for a in self.pages(info, counter=counter)]
        return items, len(counter)

    async def calendar_view_delta(self, mailbox: str, link: str = "", start: datetime | None = None,
                                  end: datetime | None = None) -> tuple[list[dict], str, int]:
        """A round of ``GET /users/{mailbox}/calendarView/delta``: from ``link`` (a deltaLink) or a new round over
        [start, end); every page followed. Returns the items (``@removed`` ones included), the round's deltaLink and
        how many requests it took. A token Graph dropped raises ``GraphError`` 410: start a new round.
        https://learn.microsoft.com/en-us/graph/api/event-delta"""
        from kiota_abstractions.method import Method
        from kiota_abstractions.request_information import RequestInformation

        url = link or (f"{self.settings.graph_base_url}/users/{quote(mailbox, safe='@')}/calendarView/delta"
                       f"?startDateTime={_graph_instant(start)}&endDateTime={_graph_instant(end)}")
        items: list[dict] = []
        for requests in range(1, 10_000):
            info = RequestInformation(Method.GET)
            info.url = url
            page = await self.send(info, retry=True, prefer=f"odata.maxpagesize={DELTA_PAGE_SIZE}") or {}
            items += page.get("value", [])
            if page.get("@odata.deltaLink"):
                return items, str(page["@odata.deltaLink"]), requests
            url = str(page.get("@odata.nextLink") or "")
            if not url:
                break
        raise GraphError(502, "NoDeltaLink", "the delta round ended without an @odata.deltaLink")

    async def batch_get(self, urls: list[str]) -> list[tuple[int, dict, Any]]:
        """GETs of up to 20 Graph URLs in one ``POST /$batch`` (https://learn.microsoft.com/en-us/graph/json-batching):
        each answer's status, headers and JSON body, in the order of ``urls``. Graph counts and throttles each request
        of a batch on its own; a throttled one answers its own 429 here."""
        from kiota_abstractions.method import Method
        from kiota_abstractions.request_information import RequestInformation

        base = self.settings.graph_base_url
        requests = [{"id": str(n), "method": "GET", "url": url.removeprefix(base) if url.startswith(base) else url}
                    for n, url in enumerate(urls)]
        info = RequestInformation(Method.POST)
        info.url = f"{base}/$batch"
        info.set_stream_content(json.dumps({"requests": requests}).encode(), "application/json")
        answer = await self.send(info, retry=True) or {}
        by_id = {str(r.get("id")): r for r in answer.get("responses", []) if isinstance(r, dict)}
        return [(int(by_id.get(str(n), {}).get("status") or 0), by_id.get(str(n), {}).get("headers") or {},
                 by_id.get(str(n), {}).get("body")) for n in range(len(urls))]

    async def get_event(self, mailbox: str, event_id: str) -> dict:
        """A calendar event of the mailbox (notifications name events, not appointments)."""
        info = self.sdk.users.by_user_id(mailbox).events.by_event_id(path_id(event_id)).to_get_request_information()
        return await self.send(info, retry=True)

    async def get_appointment(self, mailbox: str, appointment_id: str) -> dict:
        appointment = self._business(mailbox).appointments.by_booking_appointment_id(path_id(appointment_id))
        info = appointment.to_get_request_information()
        return await self.send(info, retry=True)

    async def list_customers(self, mailbox: str) -> list[dict]:
        return [c async for c in self.pages(self._business(mailbox).customers.to_get_request_information())]

    async def _post_json(self, collection: Any, body: dict[str, Any]) -> dict:
        """POST Graph's JSON as it is (camelCase, ``@odata.type``s included) to a collection's request builder:
        the SDK's models would drop what they do not know. Never retried here (a retry could create twice)."""
        from kiota_abstractions.method import Method
        from kiota_abstractions.request_information import RequestInformation

        template = collection.to_get_request_information()
        info = RequestInformation(Method.POST)
        info.url_template, info.path_parameters = template.url_template, template.path_parameters
        info.set_stream_content(json.dumps(body).encode(), "application/json")
        return await self.send(info, retry=False)

    async def create_appointment(self, mailbox: str, appointment: dict[str, Any]) -> dict:
        return await self._post_json(self._business(mailbox).appointments, appointment)

    async def create_customer(self, mailbox: str, customer: dict[str, Any]) -> dict:
        return await self._post_json(self._business(mailbox).customers, customer)

    async def cancel_appointment(self, mailbox: str, appointment_id: str, message: str) -> None:
        from msgraph.generated.solutions.booking_businesses.item.appointments.item.cancel.cancel_post_request_body import (  # noqa: E501
            CancelPostRequestBody,
        )

        body = CancelPostRequestBody(cancellation_message=message)
        builder = self._business(mailbox).appointments.by_booking_appointment_id(path_id(appointment_id)).cancel
        await self.send(builder.to_post_request_information(body), retry=False)

    # ---- subscriptions (writes: never retried here) ----------------------------------------------

    async def create_subscription(self, *, resource: str, change_type: str, notification_url: str,
                                  lifecycle_url: str, client_state: str, expiration: datetime) -> dict:
        from msgraph.generated.models.subscription import Subscription

        body = Subscription(resource=resource, change_type=change_type, notification_url=notification_url,
                            lifecycle_notification_url=lifecycle_url, client_state=client_state,
                            expiration_date_time=expiration)
        return await self.send(self.sdk.subscriptions.to_post_request_information(body), retry=False)

    async def renew_subscription(self, subscription_id: str, expiration: datetime) -> dict:
        from msgraph.generated.models.subscription import Subscription

        info = self.sdk.subscriptions.by_subscription_id(subscription_id).to_patch_request_information(
            Subscription(expiration_date_time=expiration))
        return await self.send(info, retry=False)

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        info = self.sdk.subscriptions.by_subscription_id(subscription_id).reauthorize.to_post_request_information()
        await self.send(info, retry=False)

    async def delete_subscription(self, subscription_id: str) -> None:
        """Deleting a subscription Graph no longer has is not an error."""
        info = self.sdk.subscriptions.by_subscription_id(subscription_id).to_delete_request_information()
        try:
            await self.send(info, retry=False)
        except GraphError as error:
            if error.status != 404:
                raise

    async def list_subscriptions(self) -> list[dict]:
        return [s async for s in self.pages(self.sdk.subscriptions.to_get_request_information())]

    # ---- users ------------------------------------------------------------------------------

    async def me(self, select: str) -> dict:
        """``GET /me?$select=…``: the signed-in user of a delegated token (delegated ``User.Read``)."""
        info = self.sdk.me.to_get_request_information()
        info.url = f"{self.settings.graph_base_url}/me?$select={quote(select, safe=',')}"
        return await self.send(info, retry=True)


def _graph_instant(moment: datetime | None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_graphs: PerLoop[Graph] = PerLoop(Graph, stale=lambda graph: graph.settings is not get_settings())


def get_graph() -> Graph:
    """The Graph client of the running event loop (clients hold loop-bound connections), made anew when the
    settings were read again."""
    return _graphs.get()
