"""Lenient readers for Graph JSON: a value of the expected type, else the contract's empty value.

Graph JSON is trusted for shape only as far as these go: missing, null or wrongly typed values become
``""`` / ``[]`` / ``{}`` / ``None`` / ``False``, never an exception (the mapping's robustness rule,
``shared.contracts.appointment_data``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

INT32_MAX: Final = 2**31 - 1  # the connector declares int32 fields


def as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return max(0, min(value, INT32_MAX))
    if isinstance(value, float) and value == value and abs(value) != float("inf"):  # not NaN/inf
        return max(0, min(int(value), INT32_MAX))
    if isinstance(value, str) and value.strip().isdigit():
        return min(int(value.strip()), INT32_MAX)
    return None


def as_bool(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def as_dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def as_dicts(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in as_list(value) if isinstance(item, Mapping)]


def by_id(items: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {as_str(item.get("id")): item for item in items if isinstance(item, Mapping) and as_str(item.get("id"))}


def first_str(*values: Any) -> str:
    for value in values:
        text = as_str(value)
        if text:
            return text
    return ""
