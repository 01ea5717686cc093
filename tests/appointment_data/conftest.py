"""The contract as a validator: the connector definition's ``AppointmentData`` schema, with every
``#/definitions/...`` reference resolved by jsonschema, made strict for our own output.

The published schema (like Microsoft's) requires nothing and allows extra properties, so it alone would
accept ``{}`` or a misspelt field. ``strict_schema`` additionally requires every declared property and
forbids undeclared ones, so "the keys are exactly the contract's" is checked by the same validator.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator

SWAGGER = Path(__file__).resolve().parents[2] / "connector" / "apiDefinition.swagger.json"
UTC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def load_swagger() -> dict[str, Any]:
    return dict(json.loads(SWAGGER.read_text()))


def _tighten(schema: Any) -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            schema["required"] = sorted(schema["properties"])
            schema["additionalProperties"] = False
        for value in schema.values():
            _tighten(value)
    elif isinstance(schema, list):
        for value in schema:
            _tighten(value)


def validator(strict: bool) -> Draft4Validator:
    """Swagger 2.0 schemas are JSON Schema draft 4; the root carries ``definitions`` so refs resolve."""
    definitions = copy.deepcopy(load_swagger()["definitions"])
    if strict:
        _tighten(definitions)
    root = {"definitions": definitions, "$ref": "#/definitions/AppointmentData"}
    Draft4Validator.check_schema(root)
    return Draft4Validator(root)


STRICT = validator(strict=True)
PUBLISHED = validator(strict=False)


def assert_valid(payload: Any) -> None:
    """Valid against the published schema and the strict one; times are ISO 8601 UTC or empty."""
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in STRICT.iter_errors(payload)]
    errors += [f"(published) {e.message}" for e in PUBLISHED.iter_errors(payload)]
    assert not errors, "\n".join(errors)
    for field in ("StartTime", "EndTime"):
        assert payload[field] == "" or UTC_TIME.match(payload[field]), (field, payload[field])


@pytest.fixture
def contract() -> Callable[[Any], None]:
    return assert_valid
