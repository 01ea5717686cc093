"""The shape of shared/ that lint-imports cannot see: no import of the app inside a function (a way to
dodge an import cycle), and Table keys built only by the modules that own the rows (shared/records)."""

from __future__ import annotations

import ast
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _modules() -> list[Path]:
    return sorted(SHARED.rglob("*.py"))


def test_no_module_of_the_app_is_imported_inside_a_function() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                names = ([inner.module or ""] if isinstance(inner, ast.ImportFrom) else
                         [a.name for a in inner.names] if isinstance(inner, ast.Import) else [])
                found += [f"{path.relative_to(SHARED.parent)}:{inner.lineno} {n}" for n in names
                          if n == "shared" or n.startswith("shared.")]
    assert not found, f"import these at the top of the module (lint-imports then checks the layers): {found}"


def test_only_the_records_layer_builds_table_keys() -> None:
    outside = [str(path.relative_to(SHARED.parent)) for path in _modules()
               if "records" not in path.parts and '"PartitionKey"' in path.read_text()]
    assert not outside, f"rows of the tables are keyed in shared/records only: {outside}"


def test_every_layer_is_a_package_with_a_docstring() -> None:
    for layer in ("contracts", "adapters", "records", "messages", "services", "endpoints", "workers"):
        init = SHARED / layer / "__init__.py"
        assert init.exists() and ast.get_docstring(ast.parse(init.read_text())), f"shared/{layer} says what it holds"


MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 600


def test_functions_and_modules_stay_readable() -> None:
    too_long = []
    for path in _modules():
        text = path.read_text()
        name = path.relative_to(SHARED.parent)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, (f"split into named steps (functions <= {MAX_FUNCTION_LINES} lines, "
                          f"modules <= {MAX_MODULE_LINES}): {too_long}")


def test_per_loop_state_goes_through_per_loop() -> None:
    """One object per event loop is ``shared.adapters.per_loop.PerLoop``'s job, not a dict each module keeps."""
    hand_written = [f"{path.relative_to(SHARED.parent)}" for path in _modules()
                    if path.name != "per_loop.py" and "WeakKeyDictionary" in path.read_text()]
    assert not hand_written, f"use PerLoop: {hand_written}"
