"""Route templates as the Functions runtime (ASP.NET Core routing) reads them.

Supports what ``@app.route(route=...)`` accepts: literal segments (matched case-insensitively),
``{name}``, optional ``{name?}``, defaults ``{name=value}``, catch-all ``{*name}``, several parameters in
one segment (``{file}.{ext}``), and inline constraints chained with ``:`` — ``int``, ``long``, ``bool``,
``alpha``, ``guid``, ``datetime``, ``decimal``, ``double``, ``float``, ``min(n)``, ``max(n)``,
``range(a,b)``, ``length(n)``, ``length(a,b)``, ``minlength(n)``, ``maxlength(n)``, ``regex(expr)``.

When several templates match a path, the most specific wins, as in ASP.NET: literal segments before
parameters, constrained parameters before free ones, catch-alls last.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import unquote


def _tokens(text: str) -> list[tuple[str, str]]:
    """Split a segment into ("literal", text) and ("param", body) pieces; ``{{``/``}}`` are literal braces."""
    pieces: list[tuple[str, str]] = []
    literal, i = "", 0
    while i < len(text):
        if text.startswith("{{", i) or text.startswith("}}", i):
            literal, i = literal + text[i], i + 2
        elif text[i] == "{":
            body, i = "", i + 1
            while i < len(text):
                if text.startswith("{{", i) or text.startswith("}}", i):
                    body, i = body + text[i], i + 2
                elif text[i] == "}":
                    break
                else:
                    body, i = body + text[i], i + 1
            if i >= len(text):
                raise ValueError(f"unclosed '{{' in route segment {text!r}")
            if literal:
                pieces.append(("literal", literal))
                literal = ""
            pieces.append(("param", body))
            i += 1
        elif text[i] == "}":
            raise ValueError(f"unmatched '}}' in route segment {text!r}")
        else:
            literal, i = literal + text[i], i + 1
    if literal:
        pieces.append(("literal", literal))
    return pieces


def _number(kind: Callable[[str], object]) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            kind(value)
        except (ValueError, InvalidOperation):
            return False
        return True

    return check


def _int_in(bits: int) -> Callable[[str], bool]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return lambda v: bool(re.fullmatch(r"-?\d+", v)) and low <= int(v) <= high


def _datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _args(raw: str) -> list[str]:
    return [a.strip() for a in raw.split(",")]


def _constraint(spec: str) -> Callable[[str], bool]:
    name, _, rest = spec.partition("(")
    name = name.strip().lower()
    arg = rest[:-1] if rest.endswith(")") else rest
    simple: dict[str, Callable[[str], bool]] = {
        "int": _int_in(32),
        "long": _int_in(64),
        "bool": lambda v: v.lower() in ("true", "false"),
        "alpha": lambda v: bool(re.fullmatch(r"[A-Za-z]+", v)),
        "guid": _guid,
        "datetime": _datetime,
        "decimal": _number(Decimal),
        "double": _number(float),
        "float": _number(float),
    }
    if name in simple and not rest:
        return simple[name]
    if name == "min":
        bound = int(arg)
        return lambda v: _int_in(64)(v) and int(v) >= bound
    if name == "max":
        bound = int(arg)
        return lambda v: _int_in(64)(v) and int(v) <= bound
    if name == "range":
        low, high = map(int, _args(arg))
        return lambda v: _int_in(64)(v) and low <= int(v) <= high
    if name == "length":
        bounds = list(map(int, _args(arg)))
        low, high = (bounds[0], bounds[0]) if len(bounds) == 1 else (bounds[0], bounds[1])
        return lambda v: low <= len(v) <= high
    if name == "minlength":
        low = int(arg)
        return lambda v: len(v) >= low
    if name == "maxlength":
        high = int(arg)
        return lambda v: len(v) <= high
    if name == "regex":
        pattern = re.compile(arg, re.IGNORECASE)
        return lambda v: pattern.search(v) is not None
    raise ValueError(f"unsupported route constraint {spec!r}")


def _split_constraints(body: str) -> list[str]:
    """Split ``name:int:regex(a:b)`` on colons outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in body:
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    parts.append(current)
    return parts


@dataclass
class Parameter:
    name: str
    optional: bool = False
    catch_all: bool = False
    default: str | None = None
    constraints: list[Callable[[str], bool]] = field(default_factory=list)

    @classmethod
    def parse(cls, body: str) -> Parameter:
        head, *constraints = _split_constraints(body)
        param = cls(name="")
        if head.startswith("*"):
            param.catch_all, head = True, head.lstrip("*")
        if "=" in head:
            head, param.default = head.split("=", 1)
        if head.endswith("?"):
            param.optional, head = True, head[:-1]
        if constraints and constraints[-1].endswith("?"):
            param.optional, constraints[-1] = True, constraints[-1][:-1]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", head):
            raise ValueError(f"bad route parameter name {head!r}")
        param.name = head
        param.constraints = [_constraint(c) for c in constraints if c]
        return param

    def accepts(self, value: str) -> bool:
        return all(check(value) for check in self.constraints)


@dataclass
class Segment:
    """One '/'-separated piece of a template: a literal, or a pattern with parameters."""

    literal: str | None = None
    pattern: re.Pattern[str] | None = None
    params: list[Parameter] = field(default_factory=list)
    mixed: bool = False  # literal text beside the parameter(s), e.g. "{file}.{ext}"

    @property
    def rank(self) -> int:
        if self.literal is not None:
            return 0
        if self.mixed:
            return 1
        param = self.params[0]
        if param.catch_all:
            return 4
        return 2 if param.constraints else 3


def _parse_segment(text: str) -> Segment:
    pieces = _tokens(text)
    if all(kind == "literal" for kind, _ in pieces):
        return Segment(literal="".join(value for _, value in pieces).lower())
    params: list[Parameter] = []
    regex = ""
    for kind, value in pieces:
        if kind == "literal":
            regex += re.escape(value)
            continue
        param = Parameter.parse(value)
        params.append(param)
        regex += f"(?P<{param.name}>.*)" if param.catch_all else f"(?P<{param.name}>.+)"
    mixed = len(pieces) > 1
    return Segment(pattern=re.compile(f"^{regex}$", re.IGNORECASE | re.DOTALL), params=params, mixed=mixed)


@dataclass
class RouteTemplate:
    template: str
    segments: list[Segment]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        text = template.strip("/")
        segments = [_parse_segment(s) for s in text.split("/")] if text else []
        for segment in segments[:-1]:
            if any(p.catch_all for p in segment.params):
                raise ValueError(f"catch-all parameter must be last in route {template!r}")
        return cls(template, segments)

    @property
    def specificity(self) -> tuple[int, ...]:
        return tuple(s.rank for s in self.segments)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for ``path`` (no prefix, no query), or None. Values are URL-decoded."""
        raw = path.strip("/")
        parts = raw.split("/") if raw else []
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.params and segment.params[-1].catch_all:
                rest = "/".join(unquote(p) for p in parts[index:])
                return values if self._bind_last(segment, rest, values) else None
            if index >= len(parts):
                return values if self._omit(self.segments[index:], values) else None
            value = unquote(parts[index])
            if segment.literal is not None:
                if value.lower() != segment.literal:
                    return None
                continue
            if not self._bind(segment, value, values):
                return None
        return values if len(parts) == len(self.segments) else None

    @staticmethod
    def _bind(segment: Segment, value: str, values: dict[str, str]) -> bool:
        assert segment.pattern is not None
        found = segment.pattern.match(value)
        if not found:
            return False
        for param in segment.params:
            captured = found.group(param.name)
            if captured == "" or not param.accepts(captured):
                return False
            values[param.name] = captured
        return True

    def _bind_last(self, segment: Segment, rest: str, values: dict[str, str]) -> bool:
        param = segment.params[-1]
        if segment.pattern is not None and len(segment.params) == 1 and rest == "":
            if param.default is not None:
                values[param.name] = param.default
            return True
        return self._bind(segment, rest, values)

    @staticmethod
    def _omit(missing: list[Segment], values: dict[str, str]) -> bool:
        """Trailing segments may be left out only if each is a single optional/defaulted parameter."""
        for segment in missing:
            if len(segment.params) != 1 or segment.literal is not None:
                return False
            param = segment.params[0]
            if not (param.optional or param.catch_all or param.default is not None):
                return False
            if param.default is not None:
                values[param.name] = param.default
        return True
