"""Application Insights export (azure-monitor-opentelemetry) and the one way to emit a telemetry event.

``configure_monitoring(settings)`` turns export on only when APPLICATIONINSIGHTS_CONNECTION_STRING is
set, and imports the exporter only then: locally and in tests nothing is loaded. ``function_app`` runs it
in the warm-up thread (``configure_monitoring_safely``), so its ~0.4 s of imports are not part of the
app's import; everything that needs the exporter waits for that thread first. On Azure, local (key)
authentication of Application Insights is disabled, so the exporter authenticates with the app's
user-assigned managed identity (Entra token; the identity holds Monitoring Metrics Publisher).

``track_event(name, **dimensions)`` logs one event of ``shared.contracts.events``. With export on, the exporter
turns it into a ``customEvents`` row (name, and dimensions as ``customDimensions``); without, it is an
ordinary log line. Only the dimensions the event declares are kept, and values are redacted, so a
callback URL or token cannot reach telemetry even by mistake.

``telemetry_context(mailbox=..., correlationId=...)`` sets the common dimensions (mailbox, flowId,
subscriptionId, trigger, correlationId) once for a request or queue message: every event tracked and
every log line exported inside it carries them.

``request_span(method, route, url)`` is every HTTP answer's record: with export on, an OpenTelemetry server
span the exporter turns into a ``requests`` row (name ``POST /api/graph/notifications``, resultCode, duration,
url without its query); events and log lines emitted inside it carry its operation_Id. On Azure the Python
worker makes the invocation's trace context current first (``PYTHON_ENABLE_OPENTELEMETRY``), so the span, and
everything logged in a queue or timer invocation, shares the Functions host's operation_Id for it.
``record_gauge(name, value, queue=...)`` records one measurement of a metric of ``shared.contracts.events.METRICS``:
one ``customMetrics`` row, at the next export, and none after it (``_FreshGauge``).

The app's log records reach Application Insights once: through the exporter's handler on the ``shared``
logger only. With export on they no longer propagate to the root logger, where the Functions worker would
forward them to the host, which sends them to Application Insights as well.

The correlation id travels the same way: each entry point (HTTP request, queue message, timer) opens a
``telemetry_context`` with its correlation id, and ``correlation_id()`` reads it wherever it is needed
(error bodies, the messages a step enqueues for the next one), so no signature has to pass it along.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.adapters.lazy_imports import settled
from shared.adapters.logs import RedactingFilter, redact
from shared.contracts import events

if TYPE_CHECKING:
    from shared.adapters.settings import Settings

# Only the app's own loggers are exported: the Azure SDK's loggers print request URLs and headers.
EXPORTED_LOGGER = "shared"
_event_logger = logging.getLogger("shared.contracts.events")
# Events are what alerts count: LOG_LEVEL=WARNING must not silence them.
_event_logger.setLevel(logging.INFO)
# The exporter maps a log record carrying this attribute to a customEvents row of that name.
_CUSTOM_EVENT_ATTRIBUTE = "microsoft.custom_event.name"

#: Dimensions a request or message sets once with ``telemetry_context``.
CONTEXT_DIMENSIONS: tuple[str, ...] = (events.MAILBOX, events.FLOW_ID, events.SUBSCRIPTION_ID, events.TRIGGER,
                                       events.CORRELATION_ID)
_context: ContextVar[dict[str, str]] = ContextVar("telemetry_context", default={})  # noqa: B039 (never mutated)

_configured = False
# Set by use_providers (configure_monitoring, or a test's in-memory pipeline); None: nothing is exported.
_tracer: Any = None
_meter: Any = None
_gauges: dict[str, _FreshGauge] = {}
_histograms: dict[str, Any] = {}


@contextmanager
def telemetry_context(**dimensions: Any) -> Iterator[None]:
    """Within this block, events and exported log lines carry these common dimensions (None: unset)."""
    unknown = set(dimensions) - set(CONTEXT_DIMENSIONS)
    if unknown:
        raise ValueError(f"Not a context dimension: {sorted(unknown)}; use one of {CONTEXT_DIMENSIONS}.")
    merged = {**_context.get(), **{k: redact(str(v)) for k, v in dimensions.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def correlation_id() -> str:
    """The correlation id of the request, message or timer run being handled ("" outside of one)."""
    return _context.get().get(events.CORRELATION_ID, "")


def new_correlation_id() -> str:
    return str(uuid.uuid4())


@contextmanager
def correlated() -> Iterator[None]:
    """Keep the current correlation id, or start a new one when there is none (a timer's run)."""
    if correlation_id():
        yield
        return
    with telemetry_context(correlationId=new_correlation_id()):
        yield


class ContextFilter(logging.Filter):
    """Adds the current ``telemetry_context`` to each record (the exporter makes them customDimensions)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure_monitoring(settings: Settings) -> bool:
    """Start exporting traces, logs and metrics to Application Insights; idempotent. True if export is on."""
    global _configured
    if _configured:
        return True
    if not settings.appinsights_connection_string:
        return False
    from azure.monitor.opentelemetry import configure_azure_monitor  # heavy: only when export is on

    kwargs: dict[str, Any] = {}
    # Rows nobody reads, each a billed item: the exporter's _OTELRESOURCE_ customMetrics row with every batch of
    # spans it sends (about 1.5 per appointment change, measured by bench.telemetry), its own "SDK stats"
    # (Item_Success_Count and the like, customMetrics sent to this resource), and the distro's performance
    # counters (9 customMetrics rows a minute per instance). No alert or tile reads them.
    os.environ.setdefault("APPLICATIONINSIGHTS_OPENTELEMETRY_RESOURCE_METRIC_DISABLED", "true")
    os.environ.setdefault("APPLICATIONINSIGHTS_SDKSTATS_DISABLED", "true")
    if settings.storage.uses_identity:
        # Same user-assigned identity as storage (AzureWebJobsStorage__clientId); on Azure that is also
        # the ClientId of APPLICATIONINSIGHTS_AUTHENTICATION_STRING.
        from azure.identity import ManagedIdentityCredential

        kwargs["credential"] = ManagedIdentityCredential(client_id=settings.storage.client_id)
    configure_azure_monitor(
        connection_string=settings.appinsights_connection_string,
        logger_name=EXPORTED_LOGGER,
        enable_live_metrics=True,
        # The distro's fixed-percentage sampler (ApplicationInsightsSampler) for traces and dependencies;
        # see SampledLogFilter for what else is sampled and what never is.
        sampling_ratio=settings.telemetry_sampling_ratio,
        enable_trace_based_sampling_for_logs=False,
        enable_performance_counters=False,
        **kwargs,
    )
    from opentelemetry import metrics, trace

    exported = logging.getLogger(EXPORTED_LOGGER)
    # The exporter's handler sits on the "shared" logger, not the root: scrub its records as well, give them
    # the request's dimensions, and sample its INFO lines as their traces are.
    for handler in exported.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
        if not any(isinstance(f, SampledLogFilter) for f in handler.filters):
            handler.addFilter(SampledLogFilter(settings.telemetry_sampling_ratio))
    # Once, not twice: the root logger carries the Functions worker's handler, which hands every record to
    # the host, and the host sends those to Application Insights too (traces rows beside the exporter's).
    exported.propagate = False
    use_providers(trace.get_tracer_provider(), metrics.get_meter_provider())
    _configured = True
    return True


def trace_sampler(ratio: float) -> Any:
    """The sampler ``configure_azure_monitor(sampling_ratio=ratio)`` installs: Application Insights' fixed-percentage
    sampler. It decides per trace id (a request or queue message and all its spans, the same on every instance)
    and stamps each kept span with its rate, so ingestion sets ``itemCount`` = 1 / ratio on the row
    (learn.microsoft.com/azure/azure-monitor/app/opentelemetry-configuration, "Enable Sampling";
    learn.microsoft.com/azure/azure-monitor/app/opentelemetry-sampling)."""
    from azure.monitor.opentelemetry.exporter import ApplicationInsightsSampler

    return ApplicationInsightsSampler(sampling_ratio=ratio)


class SampledLogFilter(logging.Filter):
    """On the exporter's handler: an INFO (or DEBUG) log line is exported only when the trace it belongs to is
    (the same decision as ``trace_sampler``, on the same trace id; a line outside any trace is kept at the same
    ratio). Custom events, warnings, errors and exceptions always pass: the distro samples no log record unless
    ``enable_trace_based_sampling_for_logs`` is on, which ``configure_monitoring`` keeps off, because that would
    drop an event or an error emitted inside a trace sampled out, and alerts count those."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self._sampler = trace_sampler(ratio) if ratio < 1 else None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._sampler is None or record.levelno >= logging.WARNING or hasattr(record, _CUSTOM_EVENT_ATTRIBUTE):
            return True
        from opentelemetry import trace

        span = trace.get_current_span().get_span_context()
        trace_id = span.trace_id if span.is_valid else uuid.uuid4().int
        return bool(self._sampler.should_sample(None, trace_id, "log").decision.is_sampled())


def configure_monitoring_safely(settings: Settings) -> None:
    """``configure_monitoring`` for the warm-up thread (``shared.adapters.lazy_imports.warm_up``): the exporter
    costs ~0.4 s of imports, which the import of the app then does not wait for. What needs the exporter
    waits for the warm-up instead (``track_event``, ``request_span``, ``record_gauge`` call ``settled``), so
    no custom event or request row is emitted before it exists; log records of that moment reach
    Application Insights through the Functions host, as traces. A failure is logged, not raised: a thread
    cannot stop the app, and a missing exporter must not stop deliveries."""
    try:
        configure_monitoring(settings)
    except Exception as error:  # its text may quote the connection string: the type only
        logging.getLogger(__name__).error("Application Insights export could not be set up (%s)",
                                          type(error).__name__)


def use_providers(tracer_provider: Any, meter_provider: Any) -> None:
    """Export request spans and metrics through these OpenTelemetry providers (None: stop)."""
    global _tracer, _meter
    _tracer = tracer_provider.get_tracer(EXPORTED_LOGGER) if tracer_provider is not None else None
    _meter = meter_provider.get_meter(EXPORTED_LOGGER) if meter_provider is not None else None
    _gauges.clear()
    _histograms.clear()


@dataclass
class RequestRecord:
    """What ``request_span`` records of one HTTP answer; the handler's wrapper sets ``status``."""

    name: str
    status: int = 0
    duration_ms: float = 0.0
    correlation_id: str = ""  # the answer's x-correlation-id: customDimensions.correlationId of the row


@contextmanager
def request_span(method: str, route: str, url: str) -> Iterator[RequestRecord]:
    """The record of one HTTP answer (``url`` already without its query): a server span when export is on."""
    settled()  # the exporter may still be being set up (configure_monitoring_safely)
    record = RequestRecord(f"{method} {route}")
    started = time.perf_counter()
    if _tracer is None:
        try:
            yield record
        finally:
            record.duration_ms = (time.perf_counter() - started) * 1000
            _answered(record)
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    attributes = {"http.request.method": method, events.REQUEST_ROUTE: route, "url.full": url}
    with _tracer.start_as_current_span(record.name, kind=SpanKind.SERVER, attributes=attributes,
                                       record_exception=False, set_status_on_exception=False) as span:
        try:
            yield record
        finally:
            record.duration_ms = (time.perf_counter() - started) * 1000
            span.set_attribute("http.response.status_code", record.status)
            if record.correlation_id:
                span.set_attribute(events.CORRELATION_ID, record.correlation_id)
            if record.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            _answered(record)


def _answered(record: RequestRecord) -> None:
    """A 5xx answer is also a RequestFailed event, inside the request's span (its operation_Id): events are never
    sampled, unlike the request row (TELEMETRY_SAMPLING_RATIO), so the notification-5xx alert counts these."""
    if record.status >= 500:
        track_event(events.REQUEST_FAILED, logging.ERROR, route=record.name, status=record.status,
                    correlationId=record.correlation_id or None, durationMs=round(record.duration_ms))


class _FreshGauge:
    """An observable gauge that reports each recorded measurement once, at the next collection, then nothing.

    A synchronous gauge (``meter.create_gauge``) keeps its last value and, with the cumulative temporality the
    Azure Monitor exporter uses for it, re-exports that value at every collection for as long as the process
    lives (opentelemetry-sdk ``_LastValueAggregation.collect``; the exporter's
    ``APPLICATIONINSIGHTS_METRIC_TEMPORALITIES`` lists no Gauge, so it is cumulative). With several instances, one
    that measured 0 an hour ago keeps sending 0 beside another instance's fresh 5, and an alert over the
    smallest value never fires. An observable gauge's value is reset after each collection, so what this
    callback hands over is reported once: the rows are the measurements, whichever instance made them.
    (Observable gauges with callbacks: learn.microsoft.com/azure/azure-monitor/app/opentelemetry-add-modify,
    "Add custom metrics".) One per meter, so each process (each meter provider) reports only its own."""

    def __init__(self, meter: Any, name: str) -> None:
        self._pending: dict[tuple[tuple[str, str], ...], tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()  # set() runs on the event loop, the callback on the exporter's thread
        meter.create_observable_gauge(name, callbacks=[self._observe])

    def set(self, value: float, attributes: dict[str, str]) -> None:
        with self._lock:
            self._pending[tuple(sorted(attributes.items()))] = (value, attributes)

    def _observe(self, options: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        with self._lock:
            pending, self._pending = self._pending, {}
        return [Observation(value, attributes) for value, attributes in pending.values()]


def _metric_attributes(name: str, histogram: bool, dimensions: dict[str, Any]) -> dict[str, str]:
    allowed = events.METRICS.get(name)
    if allowed is None or (name in events.HISTOGRAMS) != histogram:
        kind = "histogram" if histogram else "gauge"
        raise ValueError(f"Unknown {kind} {name!r}: declare it in shared/contracts/events.py first.")
    merged = {**{k: v for k, v in _context.get().items() if k in allowed}, **dimensions}
    return {k: redact(str(v)) for k, v in merged.items() if k in allowed and v is not None}


def record_histogram(name: str, value: float, **dimensions: Any) -> None:
    """Count one success of metric ``name`` (a histogram of ``shared.contracts.events.HISTOGRAMS``) with its value,
    for these dimensions (and the ``telemetry_context``'s declared ones). The exporter pre-aggregates a histogram:
    one ``customMetrics`` row per series and export interval (valueCount, valueSum, valueMin, valueMax), however
    many measurements it holds; none for an interval without any (delta temporality, the exporter's for
    histograms). Pre-aggregated custom metrics:
    learn.microsoft.com/azure/azure-monitor/app/pre-aggregated-metrics-log-metrics; histograms as customMetrics:
    learn.microsoft.com/azure/azure-monitor/app/opentelemetry-add-modify ("Add custom metrics")."""
    attributes = _metric_attributes(name, True, dimensions)
    settled()
    _event_logger.debug("%s %s value=%s", name, attributes, value)
    if _meter is None:
        return
    histogram = _histograms.get(name)
    if histogram is None:
        histogram = _histograms[name] = _meter.create_histogram(name)
    histogram.record(value, attributes)


def record_gauge(name: str, value: float, **dimensions: Any) -> None:
    """Record one measurement of metric ``name`` (a constant of ``shared.contracts.events.METRICS``) for these
    dimensions: one ``customMetrics`` row at the next export, never repeated (``_FreshGauge``)."""
    attributes = _metric_attributes(name, False, dimensions)
    settled()
    _event_logger.debug("%s %s value=%s", name, attributes, value)
    if _meter is None:
        return
    gauge = _gauges.get(name)
    if gauge is None:
        gauge = _gauges[name] = _FreshGauge(_meter, name)
    gauge.set(value, attributes)


def event_dimensions(name: str, dimensions: dict[str, Any]) -> dict[str, str | int | float]:
    """The dimensions of ``name`` that may be emitted: declared ones only, never None, strings redacted."""
    allowed = events.EVENTS.get(name)
    if allowed is None:
        raise ValueError(f"Unknown telemetry event {name!r}: declare it in shared/contracts/events.py first.")
    kept: dict[str, str | int | float] = {}
    for key, value in dimensions.items():
        if key not in allowed or key in events.FORBIDDEN_DIMENSIONS or value is None:
            continue
        if isinstance(value, bool):
            kept[key] = "true" if value else "false"
        elif isinstance(value, int | float):
            kept[key] = value
        else:
            kept[key] = redact(str(value))
    return kept


def track_event(name: str, level: int = logging.INFO, **dimensions: Any) -> None:
    """Emit telemetry event ``name`` (a constant of ``shared.contracts.events``) with its declared dimensions."""
    kept = event_dimensions(name, {**_context.get(), **dimensions})
    settled()  # a custom event needs the exporter: see configure_monitoring_safely
    summary = " ".join(f"{k}={v}" for k, v in sorted(kept.items()))
    _event_logger.log(level, "%s %s", name, summary, extra={_CUSTOM_EVENT_ATTRIBUTE: name, **kept})
