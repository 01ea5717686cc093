"""What Application Insights would hold of the app's telemetry, and the KQL of infra/queries run over it.

``capture()`` puts the real OpenTelemetry SDK pipelines behind ``shared.adapters.monitoring`` (a tracer and
meter provider, and a LoggingHandler on the ``shared`` logger with the filters ``configure_monitoring`` gives
the exporter's), in memory instead of over the network. ``Captured.rows()`` turns what was recorded into
Azure Monitor envelopes with the exporter's own conversion functions (azure-monitor-opentelemetry-exporter,
what it would send), and each envelope into the row of the table ingestion stores it in (``ROW_COLUMNS``:
Request -> requests, Event -> customEvents, Message -> traces, Metric -> customMetrics (and availabilityResults,
which the availability test's agents write), with the classic
Application Insights column names the alerts and the workbook query, as the tables AppRequests, AppEvents,
AppTraces and AppMetrics list them under their classic names,
https://learn.microsoft.com/azure/azure-monitor/app/convert-classic-resource#table-structure).

``Captured.query(kql)`` loads those rows into DuckDB tables of exactly those columns and runs the KQL with
duckdb-kql (Kusto's ANTLR grammar, translated to SQL and executed): a column the exporter does not write is a
binder error, and the rows that come back are the ones an alert rule would count.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.adapters import monitoring
from shared.adapters.logs import RedactingFilter

# Columns of each table (DuckDB types), and what fills them: ingestion maps envelope fields to these.
ROW_COLUMNS: dict[str, dict[str, str]] = {
    "requests": {"timestamp": "TIMESTAMP", "itemType": "VARCHAR", "id": "VARCHAR", "name": "VARCHAR",
                 "url": "VARCHAR", "resultCode": "VARCHAR", "duration": "DOUBLE", "success": "BOOLEAN",
                 "source": "VARCHAR", "customDimensions": "JSON", "customMeasurements": "JSON",
                 "operation_Name": "VARCHAR", "operation_Id": "VARCHAR", "operation_ParentId": "VARCHAR",
                 "cloud_RoleName": "VARCHAR", "cloud_RoleInstance": "VARCHAR", "itemCount": "INTEGER"},
    # Spans of outgoing calls (storage through the Azure SDK, HTTP): sampled like requests.
    "dependencies": {"timestamp": "TIMESTAMP", "itemType": "VARCHAR", "id": "VARCHAR", "name": "VARCHAR",
                     "target": "VARCHAR", "type": "VARCHAR", "data": "VARCHAR", "resultCode": "VARCHAR",
                     "duration": "DOUBLE", "success": "BOOLEAN", "customDimensions": "JSON",
                     "customMeasurements": "JSON", "operation_Name": "VARCHAR", "operation_Id": "VARCHAR",
                     "operation_ParentId": "VARCHAR", "cloud_RoleName": "VARCHAR", "cloud_RoleInstance": "VARCHAR",
                     "itemCount": "INTEGER"},
    "customEvents": {"timestamp": "TIMESTAMP", "itemType": "VARCHAR", "name": "VARCHAR", "customDimensions": "JSON",
                     "customMeasurements": "JSON", "operation_Name": "VARCHAR", "operation_Id": "VARCHAR",
                     "operation_ParentId": "VARCHAR", "cloud_RoleName": "VARCHAR", "cloud_RoleInstance": "VARCHAR",
                     "itemCount": "INTEGER"},
    "traces": {"timestamp": "TIMESTAMP", "itemType": "VARCHAR", "message": "VARCHAR", "severityLevel": "INTEGER",
               "customDimensions": "JSON", "customMeasurements": "JSON", "operation_Name": "VARCHAR",
               "operation_Id": "VARCHAR", "operation_ParentId": "VARCHAR", "cloud_RoleName": "VARCHAR",
               "cloud_RoleInstance": "VARCHAR", "itemCount": "INTEGER"},
    "customMetrics": {"timestamp": "TIMESTAMP", "itemType": "VARCHAR", "name": "VARCHAR", "value": "DOUBLE",
                      "valueCount": "INTEGER", "valueSum": "DOUBLE", "valueMin": "DOUBLE", "valueMax": "DOUBLE",
                      "customDimensions": "JSON", "operation_Name": "VARCHAR", "operation_Id": "VARCHAR",
                      "operation_ParentId": "VARCHAR", "cloud_RoleName": "VARCHAR", "cloud_RoleInstance": "VARCHAR",
                      "itemCount": "INTEGER"},
    # Written by the availability test's agents, not by the app (no envelope here makes one): the runbook's
    # queries over it are checked against its columns.
    "availabilityResults": {"timestamp": "TIMESTAMP", "itemType": "VARCHAR", "id": "VARCHAR", "name": "VARCHAR",
                            "location": "VARCHAR", "success": "BOOLEAN", "message": "VARCHAR", "size": "DOUBLE",
                            "duration": "DOUBLE", "performanceBucket": "VARCHAR", "customDimensions": "JSON",
                            "customMeasurements": "JSON", "operation_Name": "VARCHAR", "operation_Id": "VARCHAR",
                            "operation_ParentId": "VARCHAR", "cloud_RoleName": "VARCHAR",
                            "cloud_RoleInstance": "VARCHAR", "itemCount": "INTEGER"},
    # Not Application Insights: the Log Analytics workspace's own log of its operations (the Operation table, read
    # through the _LogOperation function), where it notes that its daily cap stopped ingestion. Written by the
    # workspace, never by the app: tests add its rows. Columns:
    # learn.microsoft.com/azure/azure-monitor/reference/tables/operation and /logs/daily-cap.
    "_LogOperation": {"TimeGenerated": "TIMESTAMP", "Category": "VARCHAR", "Operation": "VARCHAR",
                      "Level": "VARCHAR", "Detail": "VARCHAR", "_ResourceId": "VARCHAR"},
}
_TABLE_OF = {"RequestData": "requests", "RemoteDependencyData": "dependencies", "EventData": "customEvents",
             "MessageData": "traces", "MetricData": "customMetrics"}


def _duration_ms(text: str) -> float:
    """The exporter's ``d.hh:mm:ss.fff`` duration, in milliseconds (what the duration column holds)."""
    days, rest = text.split(".", 1)
    hours, minutes, seconds = rest.split(":")
    return ((int(days) * 24 + int(hours)) * 60 + int(minutes)) * 60_000 + float(seconds) * 1000


def _row(envelope: Any) -> tuple[str, dict[str, Any]] | None:
    base_type = envelope.data.base_type
    table = _TABLE_OF.get(base_type)
    if table is None:
        return None
    data, tags = envelope.data.base_data, envelope.tags or {}
    time = envelope.time if isinstance(envelope.time, datetime) else datetime.fromisoformat(str(envelope.time))
    row: dict[str, Any] = {
        "timestamp": time.astimezone(UTC).replace(tzinfo=None),
        "itemType": {"requests": "request", "dependencies": "dependency", "customEvents": "customEvent",
                     "traces": "trace", "customMetrics": "customMetric"}[table],
        "customDimensions": json.dumps(dict(data.properties or {})),
        "operation_Name": tags.get("ai.operation.name"),
        "operation_Id": tags.get("ai.operation.id"),
        "operation_ParentId": tags.get("ai.operation.parentId"),
        "cloud_RoleName": tags.get("ai.cloud.role"),
        "cloud_RoleInstance": tags.get("ai.cloud.roleInstance"),
        # Ingestion's itemCount: how many items this row stands for, 100 / the sampled span's rate (1: not sampled).
        "itemCount": round(100 / envelope.sample_rate) if envelope.sample_rate else 1,
    }
    if table == "requests":
        row.update(id=data.id, name=data.name, url=data.url, resultCode=data.response_code, success=data.success,
                   duration=_duration_ms(data.duration), source=data.source,
                   customMeasurements=json.dumps(dict(data.measurements or {})))
    elif table == "dependencies":
        row.update(id=data.id, name=data.name, target=data.target, type=data.type, data=data.data,
                   resultCode=data.result_code, success=data.success, duration=_duration_ms(data.duration),
                   customMeasurements=json.dumps(dict(data.measurements or {})))
    elif table == "customEvents":
        row.update(name=data.name, customMeasurements=json.dumps(dict(data.measurements or {})))
    elif table == "traces":
        levels = {"Verbose": 0, "Information": 1, "Warning": 2, "Error": 3, "Critical": 4}
        level = getattr(data.severity_level, "value", data.severity_level)  # 0..4, or a name in older exporters
        row.update(message=data.message, severityLevel=level if isinstance(level, int) else levels.get(str(level), 1),
                   customMeasurements=json.dumps(dict(data.measurements or {})))
    else:
        # A data point's value is the sum of its measurements (one for a gauge, valueCount for a histogram's
        # pre-aggregated point): customMetrics stores it as both value and valueSum.
        (point,) = data.metrics
        row.update(name=point.name, value=point.value, valueCount=point.count or 1, valueSum=point.value,
                   valueMin=point.min if point.min is not None else point.value,
                   valueMax=point.max if point.max is not None else point.value)
    return table, row


@dataclass
class Captured:
    spans: Any
    logs: Any
    metrics: Any
    # Added to every row's timestamp: "this happened that long ago", for rules that look at time passing.
    shift: timedelta = field(default=timedelta(0))
    # Metrics as each export interval read them (collect()), with how long ago that was; none collected: one
    # read at the end.
    collected: list[tuple[Any, timedelta]] = field(default_factory=list)

    def collect(self, ago: timedelta = timedelta(0)) -> None:
        """End one metric export interval: what the meters hold now becomes that interval's rows, stamped
        ``ago`` before now (export intervals of a process that ran for a while, without waiting for them)."""
        self.collected.append((self.metrics.get_metrics_data(), ago))

    def envelopes(self) -> list[Any]:
        return [envelope for envelope, _ in self._envelopes()]

    def _envelopes(self) -> list[tuple[Any, timedelta]]:
        from azure.monitor.opentelemetry.exporter.export.logs._exporter import _convert_log_to_envelope
        from azure.monitor.opentelemetry.exporter.export.metrics._exporter import _convert_point_to_envelope
        from azure.monitor.opentelemetry.exporter.export.trace._exporter import _convert_span_to_envelope

        now = timedelta(0)
        found = [(_convert_span_to_envelope(span), now) for span in self.spans.get_finished_spans()]
        found += [(_convert_log_to_envelope(record), now) for record in self.logs.get_finished_logs()]
        for data, ago in self.collected or [(self.metrics.get_metrics_data(), now)]:
            for resource_metrics in (data.resource_metrics if data else []):
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        found += [(_convert_point_to_envelope(point, metric.name, resource_metrics.resource,
                                                              scope_metrics.scope), ago)
                                  for point in metric.data.data_points]
        return found

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        tables: dict[str, list[dict[str, Any]]] = {name: [] for name in ROW_COLUMNS}
        for envelope, ago in self._envelopes():
            converted = _row(envelope)
            if converted:
                table, row = converted
                row["timestamp"] -= self.shift + ago
                tables[table].append(row)
        return tables

    def query(self, kql: str, extra: dict[str, list[dict[str, Any]]] | None = None,
              window: timedelta | None = None) -> list[dict[str, Any]]:
        """Run ``kql`` over the captured rows (and ``extra`` ones), only those of the last ``window`` when given
        (what a log alert rule's windowSize lets its query see); the rows it returns, as dicts."""
        import duckdb_kql

        tables = self.rows()
        for name, rows in (extra or {}).items():
            tables[name] = tables[name] + rows
        if window is not None:
            since = datetime.now(UTC).replace(tzinfo=None) - window
            tables = {name: [r for r in rows if r.get("timestamp", r.get("TimeGenerated")) >= since]
                      for name, rows in tables.items()}
        con = duckdb_kql.connect()
        for name, columns in ROW_COLUMNS.items():
            con.execute(f'CREATE TABLE "{name}" ({", ".join(f"{c} {t}" for c, t in columns.items())})')
            for row in tables[name]:
                con.execute(f'INSERT INTO "{name}" ({", ".join(row)}) VALUES ({", ".join("?" for _ in row)})',
                            list(row.values()))
        result = duckdb_kql.kql(con, kql)
        names = [d[0] for d in result.description]
        return [dict(zip(names, values, strict=True)) for values in result.fetchall()]


def dimensions(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(row["customDimensions"])


def shipped_sampling_ratio() -> float:
    """TELEMETRY_SAMPLING_RATIO's default: what a deployment samples at (infra/modules/function.bicep sets it)."""
    from shared.adapters.settings import SPECS

    (spec,) = [s for s in SPECS if s.name == "TELEMETRY_SAMPLING_RATIO"]
    return float(spec.default)


@contextmanager
def capture(sampling: float | None = None) -> Iterator[Captured]:
    """Record what the app emits inside the block, as the exporter would see it, sampled as ``configure_monitoring``
    samples it at ``sampling`` (default: the shipped TELEMETRY_SAMPLING_RATIO): the distro's sampler for spans,
    ``SampledLogFilter`` for log lines. Alert tests run at the shipped ratio, so a rule that only fires on sampled
    rows fails them."""
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs import export as log_export
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    ratio = shipped_sampling_ratio() if sampling is None else sampling
    tracer_provider = TracerProvider(sampler=monitoring.trace_sampler(ratio))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    memory = getattr(log_export, "InMemoryLogRecordExporter", None) or log_export.InMemoryLogExporter
    logs = memory()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])
    with warnings.catch_warnings():  # the SDK's LoggingHandler: what the distro installs (deprecated there)
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=logger_provider)
    handler.addFilter(RedactingFilter())
    handler.addFilter(monitoring.ContextFilter())
    handler.addFilter(monitoring.SampledLogFilter(ratio))
    logger = logging.getLogger(monitoring.EXPORTED_LOGGER)
    logger.addHandler(handler)
    monitoring.use_providers(tracer_provider, meter_provider)
    try:
        yield Captured(spans, logs, metrics)
    finally:
        monitoring.use_providers(None, None)
        logger.removeHandler(handler)


def alert_rule(name: str) -> dict[str, Any]:
    """Rule ``name`` of infra/modules/alerts.bicep, with its query's text under ``kql``."""
    import re

    from tests.infra.conftest import INFRA, parse

    doc = parse("modules/alerts.bicep")
    (rule,) = [r for r in doc["variables"]["rules"]["value"] if r["name"] == name]
    path = re.search(r"'([^']+\.kql)'", str(rule["query"])).group(1)
    threshold = rule["threshold"]
    if isinstance(threshold, str):  # a parameter of the module: its default
        threshold = doc["parameters"][threshold]["default"]
    return {**rule, "threshold": int(threshold), "kql": (INFRA / "modules" / path).resolve().read_text()}


def duration(iso: str) -> timedelta:
    """An ISO 8601 duration as alert rules write them (PT5M, PT1H, P1D)."""
    import re

    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", iso)
    if not match:
        raise ValueError(f"not a duration this harness knows: {iso}")
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes)


def alert_rows(name: str, captured: Captured, **query: Any) -> list[dict[str, Any]]:
    """The rows alert rule ``name``'s KQL returns over what was captured in the rule's window: it fires when more
    than its threshold come back (every rule counts rows, timeAggregation Count). The query sees nothing older
    than windowSize: "the period of time on which the alert query will be executed"; the query time range
    defaults to windowSize x numberOfEvaluationPeriods, 1 here
    (learn.microsoft.com/azure/templates/microsoft.insights/scheduledqueryrules)."""
    rule = alert_rule(name)
    return captured.query(rule["kql"], window=duration(rule["window"]), **query)


def fires(name: str, rows: list[dict[str, Any]]) -> bool:
    return len(rows) > alert_rule(name)["threshold"]
