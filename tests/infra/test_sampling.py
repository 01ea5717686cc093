"""Sampling (TELEMETRY_SAMPLING_RATIO): traces (an answer or a message with its dependencies, and its INFO log lines)
are sampled as Application Insights' sampler decides per trace id; custom events, metrics, warnings, errors and
exceptions never are, whatever the ratio, since alerts count them. Run through the real OpenTelemetry pipeline and
the exporter's envelope mapping (tests/app_insights.py), and through the distro's own configure_azure_monitor."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from shared.adapters import monitoring
from shared.adapters.settings import SettingsError, load_settings
from shared.contracts import events
from tests.app_insights import capture, dimensions, shipped_sampling_ratio
from tests.infra.conftest import ROOT

CLIENT = "c0ec7000-0000-4000-8000-000000000003"
BASE = {"ENTRA_TENANT_ID": "t", "AUTH_AUDIENCE": "a", "AUTH_ALLOWED_CLIENT_IDS": CLIENT,
        "PUBLIC_BASE_URL": "https://app.example", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
log = logging.getLogger("shared.workers.reconcile")


def test_the_ratio_is_a_setting_with_a_shipped_default_and_refuses_nonsense() -> None:
    assert load_settings(BASE).telemetry_sampling_ratio == shipped_sampling_ratio() == 0.01
    assert load_settings({**BASE, "TELEMETRY_SAMPLING_RATIO": "1"}).telemetry_sampling_ratio == 1.0
    for wrong in ("0", "-0.1", "1.5", "half", "nan"):
        with pytest.raises(SettingsError, match="TELEMETRY_SAMPLING_RATIO"):
            load_settings({**BASE, "TELEMETRY_SAMPLING_RATIO": wrong})


def _answers(n: int) -> None:
    """``n`` HTTP answers, each with an INFO line, an event, a warning and an error with its exception; every
    tenth answered 503 (a RequestFailed event)."""
    for i in range(n):
        url = "https://app.example/api/graph/notifications"
        with monitoring.request_span("POST", "/api/graph/notifications", url) as record, \
                monitoring.telemetry_context(mailbox=f"m{i}@contoso.test"):
            log.info("reconcile m%d: reconciled", i)
            monitoring.track_event(events.FLOW_REGISTERED, flowId=f"f{i}")
            log.warning("answer %d: slow", i)
            try:
                raise RuntimeError(f"boom {i}")
            except RuntimeError:
                log.exception("answer %d failed", i)
            record.status = 503 if i % 10 == 0 else 202


def test_at_a_low_ratio_every_event_warning_error_and_exception_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shared")  # LOG_LEVEL's default: INFO lines reach the exporter's handler
    n = 300
    with capture(sampling=0.01) as captured:
        _answers(n)
    rows = captured.rows()
    names = [r["name"] for r in rows["customEvents"]]
    assert names.count(events.FLOW_REGISTERED) == n
    assert names.count(events.REQUEST_FAILED) == n // 10  # every 5xx, whichever requests rows were kept
    levels = [r["severityLevel"] for r in rows["traces"]]
    assert levels.count(2) == n  # warnings
    exceptions = [e for e in captured.envelopes() if e.data.base_type == "ExceptionData"]
    assert len(exceptions) == n  # log.exception: an exceptions row each
    # Traces are sampled: about 1 in 100 answers, and the INFO lines of exactly those answers.
    kept = {r["operation_Id"] for r in rows["requests"]}
    assert len(kept) < n // 10
    info = [r for r in rows["traces"] if r["severityLevel"] == 1]
    assert {r["operation_Id"] for r in info} == kept
    assert all(r["itemCount"] == 100 for r in rows["requests"])  # each kept row stands for 100 answers


def test_at_the_shipped_ratio_the_5xx_alert_sees_every_failed_answer() -> None:
    with capture() as captured:
        _answers(50)
    failed = [r for r in captured.rows()["customEvents"] if r["name"] == events.REQUEST_FAILED]
    assert [(dimensions(r)["route"], dimensions(r)["status"]) for r in failed] == [
        ("POST /api/graph/notifications", "503")] * 5


def test_configure_monitoring_installs_the_distros_sampler_and_keeps_log_sampling_off() -> None:
    # The real distro in a fresh interpreter (it sets global providers): the tracer provider samples with
    # Application Insights' sampler at the setting's ratio, log records are not dropped by trace, and the
    # exporter's handler samples INFO lines only.
    code = (
        "import logging\n"
        "from opentelemetry import trace\n"
        "from azure.monitor.opentelemetry.exporter import ApplicationInsightsSampler\n"
        "from shared.adapters import monitoring\nfrom shared.adapters.settings import load_settings\n"
        f"s = load_settings({{**{BASE!r}, 'TELEMETRY_SAMPLING_RATIO': '0.2',"
        " 'APPLICATIONINSIGHTS_CONNECTION_STRING': 'InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        "IngestionEndpoint=http://127.0.0.1:9/;LiveEndpoint=http://127.0.0.1:9/'})\n"
        "assert monitoring.configure_monitoring(s)\n"
        "sampler = trace.get_tracer_provider().sampler\n"
        "assert isinstance(sampler, ApplicationInsightsSampler) and sampler._ratio == 0.2, sampler\n"
        "handlers = logging.getLogger('shared').handlers\n"
        "assert any(isinstance(f, monitoring.SampledLogFilter) for h in handlers for f in h.filters)\n"
        "from opentelemetry._logs import get_logger_provider\n"
        "from azure.monitor.opentelemetry.exporter.export.logs._processor import _AzureBatchLogRecordProcessor\n"
        "procs = get_logger_provider()._multi_log_record_processor._log_record_processors\n"
        "(batch,) = [p for p in procs if isinstance(p, _AzureBatchLogRecordProcessor)]\n"
        "assert not batch._enable_trace_based_sampling_for_logs\n"
        "import os\nassert os.environ['APPLICATIONINSIGHTS_OPENTELEMETRY_RESOURCE_METRIC_DISABLED'] == 'true'\n"
        "assert os.environ['APPLICATIONINSIGHTS_SDKSTATS_DISABLED'] == 'true'\n"
    )
    env = {**os.environ, "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}  # Microsoft's usage counters: off
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]


def test_a_ratio_of_one_keeps_every_info_line() -> None:
    kept: list[Any] = []
    sampled = monitoring.SampledLogFilter(1.0)
    for i in range(20):
        record = logging.LogRecord("shared.x", logging.INFO, __file__, 1, f"line {i}", None, None)
        kept += [record] if sampled.filter(record) else []
    assert len(kept) == 20
