"""allOf (and $ref with sibling keywords): one schema that holds exactly when all the conjuncts hold.

schema_regex.py resolves the $refs and flattens nested allOf into (JSON pointer, schema) conjuncts; this
module merges them. Every rule below is an equivalence (the merged schema has exactly the instances of the
conjunction), so a value the merged schema generates validates against every part:
- object keywords merge per object_keys.py (each part's additionalProperties governs the keys the other
  parts declare); enum/const intersect (JSON equality: 1 == 1.0, true != 1); `type` intersects.
- bounds keep the tightest: minLength/minItems/minProperties the largest, the max* the smallest, and
  minimum/maximum with their exclusive forms (bounds.py); uniqueItems true wins; integer multipleOf steps
  combine into their least common multiple (two different fractional steps are refused, bounds.py).
- schemas that each constrain the same thing are conjoined inside it: items, additionalItems,
  propertyNames, dependentSchemas, the schema form of dependencies (lists are unioned, a list
  becomes `required` when the other part has a schema); two `not`s become `not: {anyOf: [a, b]}`.
- a second anyOf/oneOf is distributed into the first's branches: anyOf(A) and X is anyOf(a_i and X) for
  any X, and oneOf(A) and X is oneOf(a_i and X) (exactly one a_i holds together with X exactly when X holds
  and exactly one a_i does). A second if/then/else C goes inside the first's then and else alike (then and
  else without `if` are ignored by validators, and dropped here).
- two patterns become one pattern that Python's `re` reads as both (string_sets.py `conjunction_pattern`).
- keywords validators do not know (x-*, vendor keys) keep the first value: they constrain nothing.
Anything else that differs between the parts (two formats, two tuple `items` lists) is refused by name.
"""

from __future__ import annotations

import copy

from constraints.bounds import merge_bounds, merge_multiple_of
from constraints.object_keys import OBJECT_KEYS, conjoin, is_forbidden, key_schema, merge_object_parts
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema
from constraints.string_sets import conjunction_pattern
from constraints.unions import same_value

# keywords some draft's validator evaluates; any other keyword is ignored by validators
VALIDATION = {
    "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "format", "items", "additionalItems", "prefixItems", "maxItems",
    "minItems", "uniqueItems", "contains", "maxContains", "minContains", "maxProperties", "minProperties",
    "required", "properties", "patternProperties", "additionalProperties", "dependencies",
    "dependentRequired", "dependentSchemas", "propertyNames", "if", "then", "else", "allOf", "anyOf",
    "oneOf", "not", "$ref", "$dynamicRef", "$recursiveRef", "unevaluatedItems", "unevaluatedProperties",
    "contentEncoding", "contentMediaType", "contentSchema", "disallow", "extends", "divisibleBy",
}
_LARGEST = ("minLength", "minItems", "minProperties", "minContains")
_SMALLEST = ("maxLength", "maxItems", "maxProperties", "maxContains")
_CONJOINED = ("additionalItems", "propertyNames")  # not contains: two items may each satisfy one
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_CONDITIONAL = ("if", "then", "else")


def merge_conjuncts(parts: list[tuple[str, dict]], path: str) -> dict:
    """The merged schema of `parts` ((pointer, schema) pairs, none with allOf or $ref at its top)."""
    out: dict = {}
    for _, part in parts:
        for k, v in part.items():
            if k in OBJECT_KEYS or k in _BOUNDS or k in _CONDITIONAL or k == "multipleOf":
                continue  # merged below, over all the parts at once
            if k not in out:
                out[k] = copy.deepcopy(v)
            elif k not in VALIDATION or _equal(out[k], v):
                continue
            else:
                _merge_key(out, k, v, path)
    if "enum" in out and "const" in out:  # both hold: the const, if the enum has it
        const = out.pop("const")
        out["enum"] = [x for x in out["enum"] if same_value(x, const)]
    _merge_conditionals(out, [p for _, p in parts])
    out.update(merge_bounds([p for _, p in parts], path))
    out.update(merge_multiple_of([p for _, p in parts], path))
    out.update(merge_object_parts([part for _, part in parts]))
    for key in out.get("required", []):  # name the part that forbids a required key
        for where, part in parts:
            if is_forbidden(key_schema(part, key)):
                kw = "properties/" + key if key in part.get("properties", {}) else "additionalProperties"
                raise Unsatisfiable(
                    f"unsupported: allOf: required property {key!r} forbidden by {kw.split('/')[0]} "
                    f"(no object validates) (at {where}/{kw})"
                )
    return out


def _equal(a, b) -> bool:
    return a == b and same_value(a, b)


def _merge_key(out: dict, k: str, v, path: str) -> None:
    """Fold a second, different value `v` of validation keyword `k` into `out`."""
    mine = out[k]
    if k in ("enum", "const"):
        vals = [mine] if k == "const" else list(mine)
        theirs = [v] if k == "const" else list(v)
        out.pop(k)
        out["enum"] = [x for x in vals if any(same_value(x, y) for y in theirs)]
    elif k == "type":
        out[k] = type_intersection(mine, v, path)
    elif k in _LARGEST:
        out[k] = max(mine, v)
    elif k in _SMALLEST:
        out[k] = min(mine, v)
    elif k == "uniqueItems":
        out[k] = bool(mine) or bool(v)
    elif k in _CONJOINED or (k == "items" and not isinstance(v, list) and not isinstance(mine, list)):
        out[k] = conjoin([mine, v])
    elif k == "not":
        out[k] = {"anyOf": [mine, v]}
    elif k in ("anyOf", "oneOf") and isinstance(mine, list):
        out[k] = [{"allOf": [b, {k: v}]} for b in mine]
    elif k == "pattern":
        out[k] = conjunction_pattern(mine, v, path)
    elif k in ("dependencies", "dependentSchemas", "dependentRequired"):
        out[k] = _merge_dependencies(mine, v)
    else:
        raise UnsupportedSchema(f"unsupported: allOf with conflicting {k!r} (at {path})")


def _merge_dependencies(a: dict, b: dict) -> dict:
    """Per trigger key: key lists are unioned, schemas conjoined (a list is `required` of its keys)."""
    out = dict(a)
    for key, dep in b.items():
        if key not in out:
            out[key] = dep
        elif isinstance(out[key], list) and isinstance(dep, list):
            out[key] = list(dict.fromkeys(out[key] + dep))
        else:
            out[key] = conjoin([{"required": d} if isinstance(d, list) else d for d in (out[key], dep)])
    return out


def _merge_conditionals(out: dict, parts: list[dict]) -> None:
    """The first part's if/then/else, with every later one conjoined into both its then and its else."""
    conds = [{k: p[k] for k in _CONDITIONAL if k in p} for p in parts if "if" in p]
    conds = list({repr(c): c for c in conds}.values())  # the same conditional twice is one
    if not conds:
        return
    out.update(copy.deepcopy(conds[0]))
    for c in conds[1:]:
        out["then"] = conjoin([out.get("then", True), c])
        out["else"] = conjoin([out.get("else", True), c])


def type_intersection(a, b, path: str):
    """The JSON types both `type` values allow (an integer is also a number)."""
    a, b = ([x] if isinstance(x, str) else list(x) for x in (a, b))
    both = [t for t in a if t in b]
    if ("integer" in a and "number" in b) or ("number" in a and "integer" in b):
        both.append("integer")
    both = list(dict.fromkeys(both))
    if not both:
        raise Unsatisfiable(f"unsupported: allOf with conflicting 'type', no value validates (at {path})")
    return both[0] if len(both) == 1 else both
