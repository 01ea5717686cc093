"""scripts/flow_expressions.py: the trigger fields it recognises in every spelling Power Automate writes, and the
expressions it leaves alone (a finding is work for a person: no false alarms on what behaves the same)."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.flow_expressions import KINDS, scan_definition


def kinds(*expressions: Any) -> list[tuple[str, str]]:
    actions = {f"A{i}": {"inputs": {"value": e}} for i, e in enumerate(expressions)}
    return [(f.kind, f.field) for f in scan_definition({"actions": actions})]


@pytest.mark.parametrize("expression", [
    "@triggerBody()?['Id']", "@{triggerBody()['id']}", "@triggerOutputs()?['body/Id']",
    "@triggerOutputs()?['body']?['Id']", "@trigger()['outputs']['body']['Id']", "x @{ triggerBody() ?[ 'Id' ] } y",
])
def test_every_spelling_of_a_trigger_field_is_recognised(expression: str) -> None:
    assert [kind for kind, _ in kinds(expression)] == ["id-not-unique"]


@pytest.mark.parametrize("expression", [
    "@triggerBody()?['CustomerName']", "@triggerBody()?['AppointmentId']",
    "@triggerBody()?['SelfServiceAppointmentId']",
    "@equals(variables('x'), null)", "@coalesce(body('Get_item')?['Title'], 'none')",
    "@equals(triggerBody()?['ServiceName'], 'null')", "@outputs('Id')?['body/Id']", "@items('Loop')?['Id']",
    "Booked: @{triggerBody()?['StartTime']} (not coalesce(, unbalanced", "@empty(variables('Customers'))",
])
def test_what_behaves_the_same_is_not_reported(expression: str) -> None:
    assert kinds(expression) == []


def test_calls_are_read_with_their_quoted_arguments_and_nesting() -> None:
    assert kinds("@coalesce(triggerBody()?['CustomerName'], 'a, b (c)')") == [("null-check", "CustomerName")]
    assert kinds("@if(equals(null, triggerOutputs()?['body/CancelReason']), 'none', 'some')") == [
        ("null-check", "CancelReason")]
    assert kinds("@not(equals(triggerBody()?['CustomerEmail'], ''))") == [("empty-string-compare", "CustomerEmail")]
    assert kinds("@greater(length(triggerBody()?['Customers']), 1)") == [("customers-on-one-to-one", "Customers")]
    assert kinds("@empty(triggerBody()?['CustomQuestionAnswers'])") == [("empty-check", "CustomQuestionAnswers")]


def test_designer_conditions_are_read_as_well_as_expressions() -> None:
    condition = {"or": [{"equals": ["@triggerBody()?['CancelReason']", None]},
                        {"equals": ["", "@triggerOutputs()?['body/ServiceNotes']"]},
                        {"equals": ["@triggerBody()?['ServiceName']", "Bikes"]}]}
    found = scan_definition({"actions": {"If": {"type": "If", "expression": condition}}})
    assert [(f.kind, f.field, f.where) for f in found] == [
        ("null-check", "CancelReason", "actions.If.expression.or[0].equals"),
        ("empty-string-compare", "ServiceNotes", "actions.If.expression.or[1].equals")]


def test_each_finding_says_what_differs_and_what_to_do() -> None:
    (finding,) = scan_definition({"actions": {"A": {"inputs": "@triggerBody()?['Id']"}}})
    described = finding.as_dict()
    assert described["severity"] in ("changes", "review") and "AppointmentId" in described["advice"]
    assert all(severity in ("changes", "review") and differs and advice for severity, differs, advice in KINDS.values())
