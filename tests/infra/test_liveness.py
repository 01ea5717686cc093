"""The two alerts that say the app is not running at all, whatever it logs: ``app-unavailable`` (a standard
availability test of GET /api/health with a metric alert on it) and ``app-silent`` (no heartbeat of the app's own
exporter for 15 minutes). Each is driven into both states: an app that runs, and one that stopped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.contracts.ncrontab import shortest_period
from shared.workers import queue_metrics
from tests.app_insights import alert_rows, alert_rule, capture, duration, fires
from tests.infra.conftest import body, parse

LIVENESS_DEADLINE = timedelta(minutes=15)  # issue 24: a stopped app is alerted within 15 minutes


# --- app-silent: the heartbeat of the app's own exporter ----------------------------------------------------


async def test_an_app_that_stopped_sending_fires_app_silent_and_a_running_one_does_not(clean_env) -> None:
    # The queue-metrics timer's runs of the last 10 minutes, as the exporter of a running app sends them.
    with capture() as running:
        for ago in (10, 5, 0):
            await queue_metrics.measure_poison_queues()
            running.collect(ago=timedelta(minutes=ago))
    assert len(running.rows()["customMetrics"]) == 9  # three queues, three runs: one row each
    assert alert_rows("app-silent", running) == []

    # The same app, stopped 16 minutes ago (a setting refused at import, a crashed worker, a broken exporter):
    # nothing since its last run.
    running.shift = timedelta(minutes=16)
    (row,) = alert_rows("app-silent", running)
    assert fires("app-silent", [row]) and row["measurements"] == 0
    with capture() as never_started:
        pass
    assert fires("app-silent", alert_rows("app-silent", never_started))


def test_app_silent_fires_within_15_minutes_of_the_last_heartbeat(app_settings: dict[str, Any]) -> None:
    # The heartbeat's timer runs every 5 minutes on Azure (the app setting Bicep gives it) ...
    interval = shortest_period(app_settings["QUEUE_METRICS_SCHEDULE"], datetime(2030, 1, 1, tzinfo=UTC))
    assert interval == timedelta(minutes=5)
    # ... and the rule looks at 3 runs (a late or skipped one does not fire it), every 5 minutes.
    rule = alert_rule("app-silent")
    assert duration(rule["window"]) == 3 * interval and duration(rule["frequency"]) == interval
    assert rule["severity"] == 1



# --- app-unavailable: the availability test of /api/health and its metric alert -----------------------------


def _health_test() -> dict[str, Any]:
    return body(parse("modules/alerts.bicep")["resources"]["healthTest"])


def _health_alert() -> dict[str, Any]:
    return body(parse("modules/alerts.bicep")["resources"]["healthAlert"])


def _locations() -> list[str]:
    return parse("modules/alerts.bicep")["parameters"]["availabilityTestLocations"]["default"]


def run_availability_test(url: str) -> int:
    """What Application Insights' test agents do with the webtest as Bicep declares it, from every location
    (learn.microsoft.com/azure/azure-monitor/app/availability-standard-tests): GET the URL, success only with the
    expected status within the timeout; with retries on, a location fails only when 3 attempts in a row fail.
    Returns how many locations failed."""
    test = _health_test()["properties"]
    rules, request = test["ValidationRules"], test["Request"]
    attempts = 3 if test["RetryEnabled"] else 1
    failed = 0
    for _ in _locations():
        ok = False
        for _ in range(attempts):
            try:
                answer = httpx.request(request["HttpVerb"], url, timeout=test["Timeout"],
                                       follow_redirects=request["FollowRedirects"])
                ok = answer.status_code == rules["ExpectedHttpStatusCode"]
            except httpx.TransportError:
                ok = False
            if ok:
                break
        failed += not ok
    return failed


def availability_alert_fires(failed_locations: int) -> bool:
    criteria = _health_alert()["properties"]["criteria"]
    assert criteria["'odata.type'"] == "Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria"
    # failedLocationCount: length(availabilityTestLocations) - 2, as the page recommends.
    expression = json.dumps(criteria["failedLocationCount"])
    assert "availabilityTestLocations" in expression and '"operand_2": 2' in expression
    return failed_locations >= len(_locations()) - 2


@pytest.mark.slow
def test_a_stopped_app_fails_the_availability_test_and_fires_app_unavailable(app_host) -> None:
    health = f"{app_host.url}/api/health"
    assert run_availability_test(health) == 0
    assert not availability_alert_fires(0)
    app_host.kill()  # the app stopped: on Azure a host without the app answers 404/503, here nothing answers
    failed = run_availability_test(health)
    assert failed == len(_locations()) and availability_alert_fires(failed)


def test_app_unavailable_watches_the_public_health_route_and_fires_within_15_minutes(
        main_bicep: dict[str, Any]) -> None:
    test, alert = _health_test(), _health_alert()
    assert test["kind"] == "standard" and test["properties"]["Kind"] == "standard"
    assert test["properties"]["Enabled"] is True and alert["properties"]["enabled"] is True
    # The URL main.bicep passes is the HEALTH_URL it outputs: the anonymous route, through the public base URL.
    assert main_bicep["modules"]["alerts"]["config"]["params"]["healthUrl"] == "${baseUrl}/api/health"
    assert main_bicep["outputs"]["HEALTH_URL"]["value"] == "${baseUrl}/api/health"
    assert test["properties"]["Request"]["RequestUrl"] == "healthUrl"
    # At least five places, as recommended, and linked to the Application Insights resource.
    assert len(_locations()) >= 5
    assert json.dumps(test["tags"]).count("hidden-link:${applicationInsightsId}") == 1
    # Worst case: the last good run just before the stop, the next one 5 minutes later (its retries are seconds
    # apart), then a metric alert evaluated every minute over 5.
    props = alert["properties"]
    worst = (timedelta(seconds=test["properties"]["Frequency"]) + 3 * timedelta(seconds=test["properties"]["Timeout"])
             + duration(props["evaluationFrequency"]) + duration(props["windowSize"]))
    assert worst <= LIVENESS_DEADLINE, worst
    assert props["severity"] == 1 and props["autoMitigate"] is True
