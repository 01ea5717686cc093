"""The workspace's daily cap and the alert when it is reached: the cap is declared (and can be switched off), and
the daily-cap-reached rule's KQL fires on the event the workspace writes to its Operation table when the cap stops
ingestion, and on nothing else it writes there (learn.microsoft.com/azure/azure-monitor/logs/daily-cap)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.app_insights import alert_rows, capture, fires
from tests.infra.conftest import parse, resources

WORKSPACE = "/subscriptions/0000/resourceGroups/rg-bookings/providers/Microsoft.OperationalInsights/workspaces/log-x"


def _operation(detail: str, ago: timedelta = timedelta(minutes=5), category: str = "Ingestion") -> dict[str, Any]:
    """A row of the workspace's Operation log. Detail holds the ingestion status the workspace reports
    (workspaceCapping.dataIngestionStatus: OverQuota when the cap stopped collection, ApproachingQuota at 80%,
    RespectQuota when it resumed); the sentence around it is the workspace's, a stand-in here."""
    return {"TimeGenerated": datetime.now(UTC).replace(tzinfo=None) - ago, "Category": category,
            "Operation": "Data collection Status", "Level": "Warning", "_ResourceId": WORKSPACE,
            "Detail": f"The data collection status changed to {detail}."}


def test_the_workspace_has_a_daily_cap_from_a_parameter_with_a_stated_default() -> None:
    doc = parse("modules/monitoring.bicep")
    (workspace,) = resources(doc, "Microsoft.OperationalInsights/workspaces").values()
    assert workspace["properties"]["workspaceCapping"]["dailyQuotaGb"] == "dailyCapGb"
    main = parse("main.bicep")
    assert main["parameters"]["logDailyCapGb"]["default"] == doc["parameters"]["dailyCapGb"]["default"] == 1
    assert main["modules"]["monitoring"]["config"]["params"]["dailyCapGb"] == "logDailyCapGb"


def test_the_cap_being_reached_fires_the_alert() -> None:
    with capture() as nothing_from_the_app:
        pass
    rows = alert_rows("daily-cap-reached", nothing_from_the_app, extra={"_LogOperation": [_operation("OverQuota")]})
    assert fires("daily-cap-reached", rows)
    (row,) = rows
    assert "OverQuota" in row["Detail"] and row["Category"] == "Ingestion"


def test_approaching_the_cap_resuming_or_an_old_stop_do_not_fire() -> None:
    with capture() as nothing_from_the_app:
        pass
    quiet = [_operation("ApproachingQuota"), _operation("RespectQuota"),
             _operation("OverQuota", ago=timedelta(hours=2)),  # yesterday's stop: outside the rule's window
             _operation("OverQuota", category="Agent")]
    rows = alert_rows("daily-cap-reached", nothing_from_the_app, extra={"_LogOperation": quiet})
    assert not fires("daily-cap-reached", rows)


def test_the_rule_runs_on_the_workspace_and_the_others_on_application_insights() -> None:
    doc = parse("modules/alerts.bicep")
    (rule,) = resources(doc, "Microsoft.Insights/scheduledQueryRules").values()
    ((scope,),) = [[s["operator"]["operands"] for s in rule["properties"]["scopes"]]]
    assert (scope["true_value"], scope["false_value"]) == ("workspaceId", "applicationInsightsId")
    assert "'daily-cap-reached'" in str(scope["condition"]).replace('"daily-cap-reached"', "'daily-cap-reached'")
    assert "workspaceId" in str(parse("main.bicep")["modules"]["alerts"]["config"]["params"]["workspaceId"])


def test_the_budget_is_optional_and_notifies_the_alert_receivers() -> None:
    doc = parse("modules/alerts.bicep")
    assert doc["parameters"]["monthlyBudget"]["default"] == 0
    budget = doc["resources"]["budget"]["config"]
    assert budget["condition"]["operator"] == {"type": "greater_than",
                                              "operands": {"operand_1": "monthlyBudget", "operand_2": 0}}
    notifications = budget["config"]["properties"]["notifications"]
    assert {n["thresholdType"] for n in notifications.values()} == {"Actual", "Forecasted"}
    for notification in notifications.values():
        assert notification["contactEmails"] == "alertRecipients"
        (group,) = notification["contactGroups"]
        assert group["operator"]["operands"] == {"operand_1": "actionGroup", "operand_2": "id"}
    main = parse("main.bicep")
    assert main["modules"]["alerts"]["config"]["params"]["monthlyBudget"] == "monthlyBudget"
