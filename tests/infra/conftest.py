"""Parsed Bicep for the infra tests: every file under infra/, parsed once with pycep-parser.

pycep renders a Bicep file as JSON. It does not tell a string literal from a reference to a parameter or
variable (both come back as plain strings), so helpers here resolve names against the file's own
parameters and variables.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


@cache
def parse(relative: str) -> dict[str, Any]:
    """The pycep JSON of ``infra/<relative>``."""
    return BicepParser().parse(file_path=INFRA / relative)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def resources(doc: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    """Resources of ``type_`` (case-insensitive), by symbolic name, with loops unwrapped to their body."""
    found = {}
    for name, res in doc.get("resources", {}).items():
        if res["type"].lower() == type_.lower():
            found[name] = body(res)
    return found


def body(res: dict[str, Any]) -> dict[str, Any]:
    config = res["config"]
    while "loop_type" in config or ("condition" in config and "config" in config):
        config = config["config"]
    return config


def is_reference(doc: dict[str, Any], value: Any) -> bool:
    """True when ``value`` names a parameter or variable of ``doc`` (pycep drops the quotes of literals)."""
    return isinstance(value, str) and (value in doc.get("parameters", {}) or value in doc.get("variables", {}))


def lower_keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in obj.items()}


@pytest.fixture(scope="session")
def main_bicep() -> dict[str, Any]:
    return parse("main.bicep")


@pytest.fixture(scope="session")
def function_bicep() -> dict[str, Any]:
    return parse("modules/function.bicep")


@pytest.fixture(scope="session")
def app_settings(function_bicep: dict[str, Any]) -> dict[str, Any]:
    """The Function App's app settings as declared (values as pycep renders them)."""
    return function_bicep["variables"]["appSettings"]["value"]
