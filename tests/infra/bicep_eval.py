"""A small evaluator for the Bicep expressions pycep-parser renders, enough to compute what a deployment
declares from given parameter values (tests/infra/test_redirect_uris.py: what the second `azd provision`
sets). It knows the functions and operators the evaluated expressions use and raises on anything else, so an
expression rewritten beyond them fails the test instead of being guessed."""

from __future__ import annotations

from typing import Any


class Unsupported(NotImplementedError):
    """An expression this evaluator does not know: extend it rather than skip the test."""


def _union(*arrays: list[Any]) -> list[Any]:
    # Bicep union() of arrays: the elements of each, in order, without duplicates.
    out: list[Any] = []
    for array in arrays:
        for item in array:
            if item not in out:
                out.append(item)
    return out


_FUNCTIONS = {
    "split": lambda s, d: s.split(d),
    "trim": lambda s: s.strip(),
    "empty": lambda v: len(v) == 0,
    "union": _union,
    "concat": lambda *a: [x for part in a for x in part] if isinstance(a[0], list) else "".join(a),
    "toLower": lambda s: s.lower(),
}


def evaluate(node: Any, scope: dict[str, Any]) -> Any:
    """The value of pycep ``node``; a string naming a key of ``scope`` is that reference's value."""
    if isinstance(node, str):
        return scope[node] if node in scope else node
    if isinstance(node, bool | int | float) or node is None:
        return node
    if isinstance(node, list):
        return [evaluate(item, scope) for item in node]
    if "function" in node:
        return _call(node["function"], scope)
    if "operator" in node:
        return _operator(node["operator"], scope)
    if node.get("type") == "lambda_expression":
        detail = node["detail"]
        return lambda value: evaluate(detail["expression"], {**scope, detail["var_1"]: value})
    if "decorators" in node or "type" in node:
        raise Unsupported(f"not an expression: {node}")
    return {key: evaluate(value, scope) for key, value in node.items()}


def _call(function: dict[str, Any], scope: dict[str, Any]) -> Any:
    name, args = function["type"], [evaluate(a, scope) for a in function["parameters"].values()]
    if name == "filter":
        return [item for item in args[0] if args[1](item)]
    if name == "map":
        return [args[1](item) for item in args[0]]
    if name not in _FUNCTIONS:
        raise Unsupported(f"Bicep function {name}()")
    return _FUNCTIONS[name](*args)


def _operator(operator: dict[str, Any], scope: dict[str, Any]) -> Any:
    kind, operands = operator["type"], operator["operands"]
    if kind == "not":
        return not evaluate(operands["bool_value"], scope)
    if kind == "conditional":
        branch = "true_value" if evaluate(operands["condition"], scope) else "false_value"
        return evaluate(operands[branch], scope)
    if kind == "equals":
        return evaluate(operands["operand_1"], scope) == evaluate(operands["operand_2"], scope)
    if kind == "and":
        return evaluate(operands["operand_1"], scope) and evaluate(operands["operand_2"], scope)
    if kind == "or":
        return evaluate(operands["operand_1"], scope) or evaluate(operands["operand_2"], scope)
    if kind == "property_accessor":
        # a.b.c comes as accessor(a, accessor(b, c)): walk it from the value of a in scope.
        value, rest = scope[operands["operand_1"]], operands["operand_2"]
        while isinstance(rest, dict):
            inner = rest["operator"]["operands"]
            value, rest = value[inner["operand_1"]], inner["operand_2"]
        return value[rest]
    raise Unsupported(f"Bicep operator {kind}")
