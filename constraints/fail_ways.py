"""Ways to fail a schema N: for one JSON kind, lists of schemas whose every value of that kind fails N.

negation.py generates `{rest..., not: N}` from these (one way at a time, conjoined with the rest and the
kind); unions.py narrows overlapping oneOf branches with `not`. A way is a list of schemas that must all
hold. Each rule is "this makes one conjunct of N fail", so the value fails N:
- a conjunct holding `not: X`: X holds.
- anyOf: every branch fails (one way per branch, every combination, capped).
- objects: a key N requires is missing; a property N constrains holds a value failing that constraint
  (`not` one level down); fewer than minProperties or more than maxProperties keys; a dependency's trigger
  present without a key it needs; a key the rest declares (`keys`) that propertyNames rejects or that
  additionalProperties: false leaves out; unequal to every object N's enum/const lists (per listed object,
  one of its keys missing or holding another value).
- arrays: fewer than minItems, more than maxItems, or non-empty with every item failing `items`.
- numbers: integers outside N's enum/const values, or past its minimum/maximum (written as integer
  bounds, which every draft reads alike).
A kind N never takes fails N with no further way ([[]]); [] means we know no way (N may still fail).
Schemas are read, never translated: $refs are looked up with unions.py `conjuncts`.
"""

from __future__ import annotations

import itertools
import math

from constraints.property_names import validator_at_root
from constraints.string_patterns import search_key
from constraints.unions import conjuncts, kinds_of

MAX_COMBOS = 64  # ways to fail an anyOf (the product over its branches) listed at most
_MAX_LEVEL = 4  # nested anyOf levels read


def ways(root, neg, kind: str, keys: tuple = (), level: int = 0) -> list[list]:
    """Lists of schemas (each list conjoined) whose every value of `kind` fails `neg`.

    `keys`: the object keys the generated value may hold (the rest's declared keys)."""
    parts = conjuncts(root, neg)
    if parts is None or level > _MAX_LEVEL:
        return []
    if kind not in kinds_of(root, parts):
        return [[]]
    out: list[list] = []
    for p in parts:
        if "not" in p:  # X holds, so `not X` fails
            out.append([p["not"]])
        if isinstance(p.get("anyOf"), list):  # every branch fails: one way per branch, combined
            per_branch = [ways(root, b, kind, keys, level + 1) for b in p["anyOf"]]
            combos = itertools.islice(itertools.product(*per_branch), MAX_COMBOS)
            out += [[x for way in combo for x in way] for combo in combos]
        if kind == "object":
            out += _object_ways(root, p, keys)
        elif kind == "array":
            out += _array_ways(p)
        elif kind == "number":
            out += _number_ways(p)
    return out


def _object_ways(root, p: dict, keys: tuple) -> list[list]:
    out = _unequal_objects(p)
    out += [[{"properties": {k: False}}] for k in p.get("required", []) if isinstance(k, str)]
    for k, sub in (p.get("properties") or {}).items():
        if sub is not True and sub != {}:
            out.append([_other_value(k, sub)])
    if int(p.get("minProperties", 0)) > 0:
        out.append([{"maxProperties": int(p["minProperties"]) - 1}])
    if p.get("maxProperties") is not None:
        out.append([{"minProperties": int(p["maxProperties"]) + 1}])
    for kw in ("dependencies", "dependentRequired"):
        for trigger, needed in (p.get(kw) or {}).items():
            if isinstance(needed, list):
                out += [[{"required": [trigger], "properties": {k: False}}] for k in needed]
    if "propertyNames" in p and keys:
        check = validator_at_root(root, p["propertyNames"])
        out += [[{"required": [k]}] for k in keys if not check.is_valid(k)]
    if p.get("additionalProperties") is False and keys:
        declared = p.get("properties") or {}
        patterns = p.get("patternProperties") or {}
        out += [
            [{"required": [k]}]
            for k in keys
            if k not in declared and not any(search_key(q, k, "patternProperties") for q in patterns)
        ]
    return out


def _other_value(key: str, sub) -> dict:
    """`key` present with a value failing `sub`."""
    return {"required": [key], "properties": {key: {"not": sub}}}


def _unequal_objects(p: dict) -> list[list]:
    vals = [p["const"]] if "const" in p else p.get("enum") if isinstance(p.get("enum"), list) else None
    if vals is None:
        return []
    listed = [v for v in vals if isinstance(v, dict)]
    if not listed:
        return [[]]  # no object is listed: every object differs
    per_value = [
        [[{"properties": {k: False}}] for k in v] + [[_other_value(k, {"const": x})] for k, x in v.items()]
        for v in listed
    ]
    if any(not w for w in per_value):  # {} is listed: only objects with keys differ; not written here
        return []
    combos = itertools.islice(itertools.product(*per_value), MAX_COMBOS)
    return [[x for way in combo for x in way] for combo in combos]


def _array_ways(p: dict) -> list[list]:
    out: list[list] = []
    if int(p.get("minItems", 0)) > 0:
        out.append([{"maxItems": int(p["minItems"]) - 1}])
    if p.get("maxItems") is not None:
        out.append([{"minItems": int(p["maxItems"]) + 1}])
    items = p.get("items")
    if isinstance(items, (dict, bool)) and items is not True and items != {}:
        out.append([{"minItems": 1, "items": {"not": items}}])
    return out


def _number_ways(p: dict) -> list[list]:
    out: list[list] = []
    vals = [p["const"]] if "const" in p else p.get("enum") if isinstance(p.get("enum"), list) else None
    if vals is not None:
        ints = sorted({int(v) for v in vals if _num(v) and float(v).is_integer()})
        edges = [None, *ints, None]
        for a, b in zip(edges, edges[1:]):
            lo, hi = None if a is None else a + 1, None if b is None else b - 1
            if lo is None or hi is None or lo <= hi:
                out.append([{"type": "integer", **_range(lo, hi)}])
    lo, xlo, hi, xhi = (p.get(k) for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"))
    if _num(lo):  # below the minimum (at it too when draft 4 makes it exclusive)
        out.append([{"type": "integer", "maximum": math.floor(lo) if xlo is True else math.ceil(lo) - 1}])
    if _num(xlo):
        out.append([{"type": "integer", "maximum": math.floor(xlo)}])
    if _num(hi):
        out.append([{"type": "integer", "minimum": math.ceil(hi) if xhi is True else math.floor(hi) + 1}])
    if _num(xhi):
        out.append([{"type": "integer", "minimum": math.ceil(xhi)}])
    return out


def _range(lo: int | None, hi: int | None) -> dict:
    return {k: v for k, v in (("minimum", lo), ("maximum", hi)) if v is not None}


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
