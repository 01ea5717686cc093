"""Which expressions of a flow read trigger fields whose values differ between Microsoft's Bookings connector and this
app's (docs/migration.md, "What the report lists"). The scan reads Workflow Definition Language text
(https://learn.microsoft.com/azure/logic-apps/workflow-definition-language-functions-reference): it finds the trigger's
fields (``triggerBody()?['X']``, ``triggerOutputs()?['body/X']``, ``triggerOutputs()?['body']?['X']``) and the calls
around them, quoted strings skipped. It changes nothing: every finding is for a person to review.

The differences, each documented where it is decided:

* ``Id`` is the appointment's ``selfServiceAppointmentId``, the all-zero GUID for every appointment staff made
  (docs/api.md, "What a flow receives"); Microsoft's connector calls it the appointment's unique identifier
  (microsoft/PowerPlatformConnectors, certified-connectors/Microsoft Bookings/apiDefinition.swagger.json).
  ``AppointmentId`` tells appointments apart.
* Every field is always sent, ``""`` / ``[]`` / ``0`` / ``false`` when empty, never null or missing
  (shared/contracts/appointment_data.py, "Robustness"); Microsoft's connector leaves some unset (its documentation:
  cancel reason and custom notes on 1:1 bookings, /work/shared/reference). ``equals(x, null)`` is then never true,
  ``coalesce(x, 'fallback')`` returns ``""`` instead of the fallback, ``equals(x, '')`` becomes true.
* ``Customers`` lists the customer of a 1:1 booking too (appointment_data.py, "1:1 vs group"); Microsoft's
  connector fills it for group bookings ("List of customers in the 1:N booking", the same swagger).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "Finding", "scan_definition"]

# kind -> (severity, what differs, what to do). "changes": the expression gives another result than with
# Microsoft's connector; "review": same result, but worth a look.
KINDS: dict[str, tuple[str, str, str]] = {
    "id-not-unique": (
        "changes",
        "Id is the appointment's SelfServiceAppointmentId: 00000000-0000-0000-0000-000000000000 for every "
        "appointment staff made, so it does not tell appointments apart",
        "use AppointmentId (Graph's appointment id, the same on the created, updated and cancelled events)"),
    "null-check": (
        "changes",
        "this connector sends every field, \"\" / [] / 0 / false when empty, never null: equals(x, null) is "
        "never true and coalesce(x, ...) returns \"\" instead of its fallback",
        "test with empty(x), e.g. if(empty(x), 'fallback', x)"),
    "empty-string-compare": (
        "changes",
        "a field Microsoft's connector left unset (null, so not equal to '') is \"\" here, so equals(x, '') is "
        "now true for it",
        "check the branch still means what it meant; empty(x) is true for both"),
    "customers-on-one-to-one": (
        "changes",
        "Customers lists the customer of a 1:1 booking too (Microsoft's connector: group bookings only), so a "
        "loop over it also runs for 1:1 bookings and length(Customers) > 0 no longer means a group booking",
        "tell group bookings by MaxAttendeesCount > 1; for 1:1 bookings the top-level Customer* fields are filled "
        "as before"),
    "empty-check": (
        "review",
        "empty() gives the same result for \"\" and for a missing field, but fields Microsoft's connector leaves "
        "empty on 1:1 bookings (cancel reason, notes, custom answers) are filled here",
        "check the branch for a field that is now filled"),
}

_FIELD = re.compile(
    r"trigger(?:"
    r"body\(\)\s*\??\s*\[\s*'(?P<a>[^']*)'"
    r"|outputs\(\)\s*\??\s*\[\s*'body/(?P<b>[^'/]*)"
    r"|outputs\(\)\s*\??\s*\[\s*'body'\s*\]\s*\??\s*\[\s*'(?P<c>[^']*)'"
    r"|\(\)\s*\??\s*\[\s*'outputs'\s*\]\s*\??\s*\[\s*'body'\s*\]\s*\??\s*\[\s*'(?P<d>[^']*)'"
    r")",
    re.IGNORECASE,
)
_CALL = re.compile(r"\b(equals|coalesce|empty)\s*\(", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^']|'')*'")


@dataclass(frozen=True)
class Finding:
    kind: str
    field: str
    where: str  # path of the JSON value in the flow's definition, e.g. actions.Condition.expression.and[0]
    expression: str

    def as_dict(self) -> dict[str, str]:
        severity, differs, advice = KINDS[self.kind]
        return {"kind": self.kind, "severity": severity, "field": self.field, "where": self.where,
                "expression": self.expression, "differs": differs, "advice": advice}


def scan_definition(definition: dict[str, Any]) -> list[Finding]:
    """Every expression in ``definition`` (a flow's properties.definition) that reads a trigger field whose value
    differs between the two connectors, once per (place, kind, field), in document order."""
    found: dict[tuple[str, str, str], Finding] = {}
    for where, value in _strings(definition, ""):
        for finding in _in_text(value, where):
            found.setdefault((finding.where, finding.kind, finding.field.lower()), finding)
    for where, node in _dicts(definition, ""):
        for finding in _in_condition(node, where):
            found.setdefault((finding.where, finding.kind, finding.field.lower()), finding)
    return list(found.values())


def _fields(text: str) -> list[tuple[int, int, str]]:
    """(start, end, field) of each trigger field read in ``text``."""
    return [(m.start(), m.end(), next(g for g in m.groups() if g is not None)) for m in _FIELD.finditer(text)]


def _in_text(text: str, where: str) -> Iterator[Finding]:
    fields = _fields(text)
    if not fields:
        return
    short = text if len(text) <= 240 else text[:237] + "..."
    for _start, _end, name in fields:
        if name.lower() == "id":
            yield Finding("id-not-unique", name, where, short)
        elif name.lower() == "customers":
            yield Finding("customers-on-one-to-one", name, where, short)
    for function, arguments in _calls(text):
        inside = [name for start, end, name in fields for a_start, a_end in arguments if a_start <= start
                  and end <= a_end]
        if not inside:
            continue
        texts = [text[a_start:a_end].strip().lower() for a_start, a_end in arguments]
        if function == "coalesce" or (function == "equals" and "null" in texts):
            yield Finding("null-check", inside[0], where, short)
        elif function == "equals" and any(t in ("''", '""') for t in texts):
            yield Finding("empty-string-compare", inside[0], where, short)
        elif function == "empty":
            yield Finding("empty-check", inside[0], where, short)


def _in_condition(node: dict[str, Any], where: str) -> Iterator[Finding]:
    """The designer's condition objects: {"equals": ["@triggerBody()?['X']", null | "@null" | ""]}."""
    operands = node.get("equals")
    if not isinstance(operands, list) or len(operands) != 2:
        return
    fields = [name for operand in operands if isinstance(operand, str) for *_, name in _fields(operand)]
    if not fields:
        return
    others = [operand for operand in operands if not (isinstance(operand, str) and _fields(operand))]
    expression = f"equals({operands[0]!r}, {operands[1]!r})"
    if any(other is None or (isinstance(other, str) and other.strip().lower() in ("@null", "@{null}"))
           for other in others):
        yield Finding("null-check", fields[0], f"{where}.equals", expression)
    elif any(other == "" for other in others):
        yield Finding("empty-string-compare", fields[0], f"{where}.equals", expression)


def _calls(text: str) -> Iterator[tuple[str, list[tuple[int, int]]]]:
    """Each equals/coalesce/empty call in ``text`` with the (start, end) of its top-level arguments."""
    blanked = _QUOTED.sub(lambda m: "'" + " " * (len(m.group()) - 2) + "'", text)
    for match in _CALL.finditer(blanked):
        arguments, depth, start = [], 0, match.end()
        for index in range(match.end(), len(blanked)):
            char = blanked[index]
            if char in "([":
                depth += 1
            elif char in ")]" and depth:
                depth -= 1
            elif char == ")" or (char == "," and depth == 0):
                arguments.append((start, index))
                start = index + 1
                if char == ")":
                    yield match.group(1).lower(), arguments
                    break


def _strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{where}[{index}]")


def _dicts(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from _dicts(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _dicts(value, f"{where}[{index}]")
