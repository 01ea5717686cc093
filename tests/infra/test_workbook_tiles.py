"""The workbook tiles that count successes read the pre-aggregated metrics the app emits (one customMetrics row
per flow and export interval), and failures from their events: driven through the app's own telemetry calls and
the exporter's envelope mapping (tests/app_insights.py), then the tile's KQL."""

from __future__ import annotations

import logging

import pytest

from shared.adapters import monitoring
from shared.contracts import events
from tests.app_insights import capture
from tests.infra.conftest import INFRA

QUERIES = INFRA / "queries"
MAILBOX = "clinic@contoso.test"


def _deliveries() -> None:
    """Flow A delivered three changes (1 s, 2 s, 6 s end to end), flow B one (3 s) and failed once."""
    with monitoring.telemetry_context(mailbox=MAILBOX):
        for flow, seconds in (("A", 1), ("A", 2), ("A", 6), ("B", 3)):
            monitoring.record_histogram(events.DELIVERY_SUCCEEDED_MS, seconds * 1000, flowId=flow,
                                        trigger="AppointmentCreated")
        monitoring.track_event(events.DELIVERY_FAILED, logging.WARNING, flowId="B", status=500, willRetry=True,
                               errorCode="ServerError", attempt=1)


def test_four_deliveries_are_two_metric_rows_one_per_flow() -> None:
    with capture() as captured:
        _deliveries()
    rows = captured.rows()
    assert [r["name"] for r in rows["customMetrics"]] == [events.DELIVERY_SUCCEEDED_MS] * 2
    assert sorted(r["valueCount"] for r in rows["customMetrics"]) == [1, 3]
    assert [r["name"] for r in rows["customEvents"]] == [events.DELIVERY_FAILED]


def test_deliveries_per_flow_counts_the_metric_and_the_failures() -> None:
    with capture() as captured:
        _deliveries()
    found = captured.query((QUERIES / "deliveries-per-flow.kql").read_text())
    assert [(r["mailbox"], r["flowId"], r["delivered"], r["failed"], r["deadLettered"]) for r in found] == [
        (MAILBOX, "A", 3, 0, 0), (MAILBOX, "B", 1, 1, 0)]


def test_end_to_end_latency_is_the_mean_and_the_slowest() -> None:
    with capture() as captured:
        _deliveries()
    (row,) = captured.query((QUERIES / "end-to-end-latency.kql").read_text())
    assert row["deliveries"] == 4
    assert row["meanSeconds"] == pytest.approx(3.0) and row["maxSeconds"] == pytest.approx(6.0)


def test_events_and_deliveries_counts_successes_from_the_metric() -> None:
    with capture() as captured:
        _deliveries()
    found = {r["series"]: r["total"] for r in captured.query((QUERIES / "events-and-deliveries.kql").read_text())}
    assert found == {"DeliverySucceeded": 4, "DeliveryFailed": 1}


def test_a_reconcile_is_a_metric_not_an_event() -> None:
    with capture() as captured, monitoring.telemetry_context(mailbox=MAILBOX):
        monitoring.record_histogram(events.MAILBOX_RECONCILED_MS, 120, fullResync="false")
        monitoring.record_histogram(events.MAILBOX_RECONCILED_MS, 80, fullResync="false")
    rows = captured.rows()
    (row,) = rows["customMetrics"]
    assert (row["name"], row["valueCount"], row["valueSum"]) == (events.MAILBOX_RECONCILED_MS, 2, 200)
    assert rows["customEvents"] == []


def test_a_histogram_is_declared_as_one() -> None:
    with pytest.raises(ValueError, match="Unknown histogram"):
        monitoring.record_histogram(events.POISON_QUEUE_LENGTH, 1, queue="q")
    with pytest.raises(ValueError, match="Unknown gauge"):
        monitoring.record_gauge(events.DELIVERY_SUCCEEDED_MS, 1)
