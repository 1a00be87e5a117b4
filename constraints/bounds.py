"""Numeric bounds and multipleOf of several conjoined schemas (allOf, all_of.py): the tightest exact form.

A part's lower bound is `minimum` (exclusive when draft 4's boolean `exclusiveMinimum` is true) and/or a
numeric `exclusiveMinimum` (draft 6 on); the conjunction's lower bound is the largest, exclusive when an
exclusive one ties the largest inclusive one. Upper bounds alike. The merged bound is written in the draft
the parts use (boolean exclusives: draft 4; numeric: draft 6 and later), so the validator reads it as the
parts meant (https://json-schema.org/understanding-json-schema/reference/numeric#range).

multipleOf: integer steps combine into their least common multiple (n is a multiple of a and of b exactly
when it is one of lcm(a, b)); other steps must be equal, since jsonschema tests a float step with float
division (`int(n / m) == n / m`), under which "a multiple of 0.3" does not imply "a multiple of 0.1".
"""

from __future__ import annotations

import math

from constraints.schema_errors import Unsatisfiable, UnsupportedSchema

_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _side(p: dict, inclusive: str, exclusive: str) -> list[tuple[float, bool]]:
    """(value, exclusive) bounds of part `p` on one side."""
    out = []
    if _num(p.get(inclusive)):
        out.append((p[inclusive], p.get(exclusive) is True))
    if _num(p.get(exclusive)):
        out.append((p[exclusive], True))
    return out


def merge_bounds(parts: list[dict], path: str) -> dict:
    """minimum/maximum/exclusiveMinimum/exclusiveMaximum of the conjunction of `parts`."""
    having = [{k: p[k] for k in _KEYS if k in p} for p in parts]
    having = [h for h in having if h]
    if not having:
        return {}
    if all(h == having[0] for h in having):
        return dict(having[0])
    draft4 = any(isinstance(h.get(k), bool) for h in having for k in ("exclusiveMinimum", "exclusiveMaximum"))
    out: dict = {}
    lows = [b for p in parts for b in _side(p, "minimum", "exclusiveMinimum")]
    highs = [b for p in parts for b in _side(p, "maximum", "exclusiveMaximum")]
    if lows:
        v = max(x for x, _ in lows)
        excl = any(x == v and e for x, e in lows)
        out.update(_write(v, excl, "minimum", "exclusiveMinimum", draft4))
    if highs:
        v = min(x for x, _ in highs)
        excl = any(x == v and e for x, e in highs)
        out.update(_write(v, excl, "maximum", "exclusiveMaximum", draft4))
    if lows and highs and max(x for x, _ in lows) > min(x for x, _ in highs):
        raise Unsatisfiable(f"unsupported: allOf with minimum over maximum, no value validates (at {path})")
    return out


def _write(v, excl: bool, inclusive: str, exclusive: str, draft4: bool) -> dict:
    if not excl:
        return {inclusive: v}
    return {inclusive: v, exclusive: True} if draft4 else {exclusive: v}


def merge_multiple_of(parts: list[dict], path: str) -> dict:
    """multipleOf of the conjunction of `parts` (refused when two differ and are not both integers)."""
    steps: list = []
    for p in parts:
        m = p.get("multipleOf")
        if _num(m) and not any(m == x and type(m) is type(x) for x in steps):
            steps.append(m)
    if not steps:
        return {}
    if len(steps) == 1:
        return {"multipleOf": steps[0]}
    if all(isinstance(m, int) and m > 0 for m in steps):
        return {"multipleOf": math.lcm(*steps)}
    raise UnsupportedSchema(f"unsupported: allOf with conflicting 'multipleOf' {steps} (at {path})")
