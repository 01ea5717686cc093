"""Alerts, workbook and KQL agree with the app's telemetry contract (shared/contracts/events.py), and the
Application Insights export is configured lazily and leaks nothing."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import monitoring
from shared.adapters.settings import load_settings
from shared.contracts import events
from tests.infra.conftest import INFRA, ROOT, bicep_files, parse

QUERIES = INFRA / "queries"
ALL_DIMENSIONS = {d for dims in events.EVENTS.values() for d in dims}


def _event_names(kql: str) -> set[str]:
    names = set(re.findall(r'name\s*(?:==|!=)\s*"([^"]+)"', kql))
    for group in re.findall(r"name\s+in\s*\(([^)]*)\)", kql):
        names |= set(re.findall(r'"([^"]+)"', group))
    return names


def test_every_query_runs_against_the_columns_the_exporter_writes() -> None:
    # Each file, as alerts and the workbook run it, over empty tables of exactly the columns ingestion fills
    # from the exporter's envelopes (tests/app_insights.py): a misspelt or absent column fails here.
    from tests.app_insights import Captured

    empty = Captured(InMemorySpans(), InMemoryLogs(), InMemoryMetrics())
    for path in sorted(QUERIES.glob("*.kql")):
        rows = empty.query(path.read_text())
        if path.name not in ("alert-renewal-heartbeat.kql", "alert-app-silent.kql"):  # nothing at all: they fire
            assert rows == [], path.name


def test_a_column_the_exporter_does_not_write_fails_the_check() -> None:
    from tests.app_insights import Captured

    empty = Captured(InMemorySpans(), InMemoryLogs(), InMemoryMetrics())
    with pytest.raises(Exception, match="statusCode"):
        empty.query('requests | where toint(statusCode) >= 500')  # the column is resultCode


class InMemorySpans:
    def get_finished_spans(self) -> list[Any]:
        return []


class InMemoryLogs:
    def get_finished_logs(self) -> list[Any]:
        return []


class InMemoryMetrics:
    def get_metrics_data(self) -> None:
        return None


def test_every_alert_rule_has_a_test_that_drives_the_app_into_its_state() -> None:
    # The rule's KQL is run over what the app emitted in that state (tests/app_insights.py: alert_rows).
    driven: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        driven |= set(re.findall(r'alert_rows\(\s*"([\w-]+)"', path.read_text()))
    rules = {r["name"] for r in _alert_rules()}
    assert rules <= driven, f"alert rules no test drives: {rules - driven}"


def test_queries_use_only_defined_events_and_dimensions() -> None:
    files = sorted(QUERIES.glob("*.kql"))
    assert len(files) >= 10
    for path in files:
        kql = path.read_text()
        if "customEvents" not in kql:
            continue
        names = _event_names(kql) - set(events.METRICS)  # a query may read customMetrics beside
        assert names, f"{path.name} reads customEvents without naming an event"
        unknown = names - set(events.EVENTS)
        assert not unknown, f"{path.name} uses events not in shared/contracts/events.py: {unknown}"
        allowed = {d for n in names for d in events.EVENTS[n]}
        dims = set(re.findall(r"customDimensions\.(\w+)", kql))
        assert dims <= allowed, f"{path.name} reads dimensions its events do not carry: {dims - allowed}"


def test_queries_use_only_defined_metrics_and_their_dimensions() -> None:
    for path in sorted(QUERIES.glob("*.kql")):
        kql = path.read_text()
        if "customMetrics" not in kql:
            continue
        names = _event_names(kql)
        metrics = names & set(events.METRICS)
        assert metrics, f"{path.name} reads customMetrics without naming a metric of shared/contracts/events.py"
        allowed = {d for n in metrics for d in events.METRICS[n]} | {
            d for n in names - metrics for d in events.EVENTS.get(n, ())}
        dims = set(re.findall(r"customDimensions\.(\w+)", kql))
        assert dims <= allowed, f"{path.name} reads dimensions its metrics and events do not carry: {dims - allowed}"


def test_every_query_file_is_used_and_every_loaded_file_exists() -> None:
    loaded: set[str] = set()
    for path in bicep_files():
        for target in re.findall(r"loadTextContent\('([^']+)'\)", path.read_text()):
            file = (path.parent / target).resolve()
            assert file.exists(), f"{path.name} loads missing {target}"
            loaded.add(file.name)
    unused = {p.name for p in QUERIES.glob("*.kql")} - loaded
    assert not unused, f"queries no alert or workbook uses: {unused}"


def _alert_rules() -> list[dict[str, Any]]:
    return parse("modules/alerts.bicep")["variables"]["rules"]["value"]


@pytest.mark.parametrize("rule,event", [
    ("delivery-failures", events.DELIVERY_FAILED),
    ("dead-letters", events.DELIVERY_DEAD_LETTERED),
    ("subscription-renewal-failed", events.SUBSCRIPTION_RENEWAL_FAILED),
    ("renewal-heartbeat", events.RENEWAL_SWEEP_COMPLETED),
    ("poisoned-messages", events.QUEUE_MESSAGE_POISONED),
    ("appointments-not-stored", events.APPOINTMENT_NOT_STORED),
    ("connector-secret-expiring", events.CONNECTOR_SECRET_EXPIRING),
    ("notification-5xx", events.REQUEST_FAILED),
    ("flow-export-missing", events.FLOWS_EXPORTED),
    ("notifications-missing", events.CHANGE_NOT_NOTIFIED),
    ("delta-check-failing", events.DELTA_CHECK_FAILING),
    ("poison-queue-length", None),
    ("app-silent", None),
])
def test_alert_rule_exists_for(rule: str, event: str | None) -> None:
    rules = {r["name"]: r for r in _alert_rules()}
    assert rule in rules
    kql_file = re.search(r"'([^']+\.kql)'", str(rules[rule]["query"])).group(1)
    kql = (INFRA / "modules" / kql_file).resolve().read_text()
    if event:
        assert event in _event_names(kql)
        if rule == "notification-5xx":
            assert "POST /api/graph/notifications" in kql
    else:  # poison-queue-length, and app-silent: the same measurements, as the app's heartbeat
        assert f'"{events.POISON_QUEUE_LENGTH}"' in kql and "customMetrics" in kql


def test_alert_rules_are_log_alerts_on_application_insights_with_an_action_group() -> None:
    doc = parse("modules/alerts.bicep")
    res = doc["resources"]["alertRules"]["config"]["config"]
    assert res["kind"] == "LogAlert"
    # On Application Insights, but daily-cap-reached, which reads the workspace's own Operation log
    # (tests/infra/test_daily_cap.py).
    ((scope,),) = [[s["operator"]["operands"] for s in res["properties"]["scopes"]]]
    assert (scope["true_value"], scope["false_value"]) == ("workspaceId", "applicationInsightsId")
    assert "actionGroup" in str(res["properties"]["actions"])


def test_workbook_charts_what_admins_need() -> None:
    charts = {c["name"] for c in parse("modules/workbook.bicep")["variables"]["charts"]["value"]}
    assert charts == {"flows-per-mailbox", "events-and-deliveries", "deliveries-per-flow", "notification-answer-time",
                      "end-to-end-latency", "renewals", "renewal-heartbeat", "poison-queues", "dead-letters"}


def test_flows_per_mailbox_reads_the_events_that_carry_the_count() -> None:
    for name in (events.FLOW_REGISTERED, events.FLOW_UNREGISTERED):
        assert {events.FLOW_COUNT, events.MAX_FLOWS} <= set(events.EVENTS[name])


def test_events_carry_no_forbidden_dimension() -> None:
    assert not ALL_DIMENSIONS & events.FORBIDDEN_DIMENSIONS
    assert len(set(events.EVENTS)) == len(events.EVENTS)


# --- the app side: shared/adapters/monitoring.py ------------------------------------------------------------


def test_track_event_keeps_declared_dimensions_only_and_redacts(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="shared.contracts.events"):
        monitoring.track_event(
            events.DELIVERY_FAILED, mailbox="shop@contoso.com", flowId="f1", status=503, willRetry=True,
            errorCode="Bearer abc.def", callbackUrl="https://x.logic.azure.com/?sig=SECRET", trigger=None,
        )
    (record,) = caplog.records
    assert record.__dict__["microsoft.custom_event.name"] == "DeliveryFailed"
    assert record.__dict__["mailbox"] == "shop@contoso.com"
    assert record.__dict__["status"] == 503 and record.__dict__["willRetry"] == "true"
    assert "callbackUrl" not in record.__dict__ and "trigger" not in record.__dict__
    assert "SECRET" not in record.getMessage() and "abc.def" not in str(record.__dict__["errorCode"])


def test_every_declared_event_is_emitted_somewhere() -> None:
    # A declared event nothing emits misleads whoever writes a query or an alert on it.
    source = "\n".join(p.read_text() for p in (ROOT / "shared").rglob("*.py") if p.parent.name != "contracts")
    constants = {value: name for name, value in vars(events).items() if isinstance(value, str) and name.isupper()}
    silent = {constants[e] for e in events.EVENTS if not re.search(rf"\b{constants[e]}\b", source)}
    assert not silent, f"declared but never emitted: {silent}"


def test_track_event_refuses_an_undeclared_event() -> None:
    with pytest.raises(ValueError, match=r"shared/contracts/events\.py"):
        monitoring.track_event("SomethingElse", mailbox="a@b.c")


def test_events_are_not_silenced_by_log_level() -> None:
    assert logging.getLogger("shared.contracts.events").getEffectiveLevel() == logging.INFO


CLIENT = "c0ec7000-0000-4000-8000-000000000003"  # AUTH_ALLOWED_CLIENT_IDS is required


def _settings(**extra: str) -> Any:
    env = {"ENTRA_TENANT_ID": "t", "AUTH_AUDIENCE": "a", "AUTH_ALLOWED_CLIENT_IDS": CLIENT,
           "PUBLIC_BASE_URL": "https://app.example", "AzureWebJobsStorage": "UseDevelopmentStorage=true", **extra}
    return load_settings(env)


def test_export_is_off_without_a_connection_string() -> None:
    assert monitoring.configure_monitoring(_settings()) is False


def test_export_is_not_loaded_when_unset() -> None:
    # A fresh interpreter: importing the telemetry modules and configuring without a connection string
    # must not import the exporter (cold start).
    code = (
        "import sys\n"
        "from shared.adapters import monitoring\nfrom shared.contracts import events\n"
        "from shared.adapters.settings import load_settings\n"
        "s = load_settings({'ENTRA_TENANT_ID': 't', 'AUTH_AUDIENCE': 'a', 'PUBLIC_BASE_URL': 'https://x.example',"
        f" 'AUTH_ALLOWED_CLIENT_IDS': '{CLIENT}', 'AzureWebJobsStorage': 'UseDevelopmentStorage=true'}})\n"
        "assert monitoring.configure_monitoring(s) is False\n"
        "monitoring.track_event(events.FLOW_REGISTERED, mailbox='a@b.c')\n"
        "loaded = [m for m in sys.modules if m.startswith(('azure.monitor', 'opentelemetry'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_export_uses_the_managed_identity_on_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, Any] = {}
    import azure.identity
    import azure.monitor.opentelemetry as distro

    class FakeCredential:
        def __init__(self, client_id: str | None = None) -> None:
            self.client_id = client_id

    def configure_azure_monitor(**kw: Any) -> None:  # what the distro leaves: its handler on logger_name
        calls.update(kw)
        logging.getLogger(kw["logger_name"]).addHandler(exporter_handler)

    exporter_handler = logging.NullHandler()
    monkeypatch.setattr(distro, "configure_azure_monitor", configure_azure_monitor)
    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", FakeCredential)
    monkeypatch.setattr(monitoring, "_configured", False)
    settings = load_settings({
        "ENTRA_TENANT_ID": "t", "AUTH_AUDIENCE": "a", "AUTH_ALLOWED_CLIENT_IDS": CLIENT,
        "PUBLIC_BASE_URL": "https://app.example", "AzureWebJobsStorage__tableServiceUri": "https://st.table.core.windows.net",
        "AzureWebJobsStorage__queueServiceUri": "https://st.queue.core.windows.net",
        "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                                                 "IngestionEndpoint=https://example.in.applicationinsights.azure.com/",
    })
    exported = logging.getLogger(monitoring.EXPORTED_LOGGER)
    try:
        assert monitoring.configure_monitoring(settings) is True
        # Logs reach Application Insights once: through the exporter's handler, not also through the root
        # logger, whose Functions worker handler forwards every record to the host (which sends it as well).
        assert exported.propagate is False and exporter_handler in exported.handlers
        assert monitoring._tracer is not None and monitoring._meter is not None
    finally:
        monkeypatch.setattr(monitoring, "_configured", False)
        exported.propagate = True
        exported.removeHandler(exporter_handler)
        monitoring.use_providers(None, None)
    assert calls["logger_name"] == "shared"
    assert isinstance(calls["credential"], FakeCredential)
    assert calls["credential"].client_id == "11111111-2222-3333-4444-555555555555"


def test_query_files_are_plain_kql() -> None:
    for path in QUERIES.glob("*.kql"):
        text = path.read_text()
        assert "{" not in text.replace("{}", ""), f"{path.name}: no workbook placeholders, it runs as-is in Logs"
        assert Path(path).read_text().strip()


def test_telemetry_context_fills_common_dimensions(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="shared.contracts.events"):
        with monitoring.telemetry_context(mailbox="shop@contoso.com", correlationId="c-1"):
            with monitoring.telemetry_context(flowId="f-9"):
                monitoring.track_event(events.DELIVERY_FAILED, status=500, attempt=2)
            monitoring.track_event(events.SUBSCRIPTION_CREATED, subscriptionId="s-1")
        monitoring.track_event(events.FLOW_REGISTERED, flowId="f-2")
    first, second, third = (r.__dict__ for r in caplog.records)
    assert (first["mailbox"], first["correlationId"], first["flowId"], first["attempt"]) == (
        "shop@contoso.com", "c-1", "f-9", 2)
    assert second["mailbox"] == "shop@contoso.com" and "flowId" not in second  # not a SubscriptionCreated dimension
    assert "mailbox" not in third and third["flowId"] == "f-2"


def test_telemetry_context_refuses_other_dimensions() -> None:
    with pytest.raises(ValueError, match="context dimension"), monitoring.telemetry_context(callbackUrl="https://x"):
        pass


def test_context_filter_adds_dimensions_to_log_records() -> None:
    record = logging.LogRecord("shared.x", logging.INFO, __file__, 1, "hello", None, None)
    with monitoring.telemetry_context(subscriptionId="s-2"):
        assert monitoring.ContextFilter().filter(record)
    assert record.__dict__["subscriptionId"] == "s-2"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's LoggingHandler: what the distro installs
def test_events_become_custom_events_rows_with_their_dimensions() -> None:
    # Through the real OpenTelemetry logging pipeline and the Azure Monitor exporter's envelope mapping
    # (no network): the row the KQL reads is customEvents, name = the event, customDimensions = dimensions.
    from azure.monitor.opentelemetry.exporter.export.logs._exporter import _convert_log_to_envelope
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs import export as log_export
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    memory = getattr(log_export, "InMemoryLogRecordExporter", None) or log_export.InMemoryLogExporter
    exporter = memory()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    handler.addFilter(monitoring.ContextFilter())
    logger = logging.getLogger(monitoring.EXPORTED_LOGGER)
    logger.addHandler(handler)
    try:
        with monitoring.telemetry_context(correlationId="c-7"):
            monitoring.track_event(events.DELIVERY_FAILED, mailbox="shop@contoso.com", status=503, willRetry=True,
                                   callbackUrl="https://prod.logic.azure.com/x?sig=SECRET")
    finally:
        logger.removeHandler(handler)
    (record,) = exporter.get_finished_logs()
    envelope = _convert_log_to_envelope(record)
    assert envelope.name == "Microsoft.ApplicationInsights.Event"
    assert envelope.data.base_data.name == "DeliveryFailed"
    dims = envelope.data.base_data.properties
    assert dims["mailbox"] == "shop@contoso.com" and dims["status"] == "503" and dims["willRetry"] == "true"
    assert dims["correlationId"] == "c-7"
    assert "SECRET" not in str(dims) and "callbackUrl" not in dims


async def test_the_invocations_operation_id_reaches_the_request_and_the_events() -> None:
    # On Azure the Python worker makes the host's trace context of the invocation current before the function
    # runs (PYTHON_ENABLE_OPENTELEMETRY; its dispatcher extracts the invocation's traceparent, as here).
    import azure.functions as func
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from shared.endpoints import graph_notifications
    from tests.app_insights import capture

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    invocation = TraceContextTextMapPropagator().extract({"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    token = context.attach(invocation)
    try:
        with capture(sampling=1.0) as captured:  # every span: what is checked here is their ids
            handshake = func.HttpRequest("POST", "https://app.example/api/graph/lifecycle?validationToken=t0k3n",
                                         params={"validationToken": "t0k3n"}, route_params={}, body=b"")
            assert (await graph_notifications.handle(handshake)).status_code == 200
            monitoring.track_event(events.RENEWAL_SWEEP_COMPLETED, subscriptionCount=0)  # a timer's event
    finally:
        context.detach(token)
    rows = captured.rows()
    (request,) = rows["requests"]
    (event,) = rows["customEvents"]
    assert request["operation_Id"] == event["operation_Id"] == trace_id
    assert request["operation_ParentId"] == "00f067aa0ba902b7"  # the host's span of the invocation
    assert (request["name"], request["resultCode"], request["success"]) == ("POST /api/graph/lifecycle", "200", True)
    assert request["url"] == "https://app.example/api/graph/lifecycle"  # no query: it held the token


def test_route_templates_name_requests_without_their_values() -> None:
    import azure.functions as func

    from shared.endpoints.http import route_template

    req = func.HttpRequest("GET", "https://app.example/api/v1/bookingBusinesses/shop%40contoso.com/webhooks?x=1",
                           route_params={"businessId": "shop@contoso.com"}, body=b"")
    assert route_template(req) == "/api/v1/bookingBusinesses/{businessId}/webhooks"
