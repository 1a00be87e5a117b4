"""`not`: generate values of the schema that provably fail the negated schema N, kind by kind.

A value validates `{..., not: N}` when it satisfies the rest and fails N. We split by JSON kind and, per
kind K the rest allows, generate the rest together with a schema whose every value of kind K fails N:
- N allows no value of kind K (its `type`, `enum`/`const`, false): every K value fails N, exactly.
- N says nothing about K values (no keyword of K's, no enum/anyOf/...): no K value fails N, none is made.
- strings: N's string language (accepted_strings.py, a superset of what it accepts) is excluded exactly
  from the rest's own string language (char_automaton.py, through string_patterns.py).
- booleans and null: the values the whole schema (with its `not`) accepts, by jsonschema itself.
- objects, arrays, numbers: up to MAX_WAYS of fail_ways.py's ways to fail N (a missing required key, a
  property failing its schema, a count or an integer past a bound, ...), each conjoined with the rest.
Each way is a subset of "fails N", so what is generated validates; a kind with no way we can write is left
out, and when no kind is left the schema is refused naming `not` and its pointer.
"""

from __future__ import annotations

import contextvars

from constraints import regex_atoms as ra
from constraints.accepted_strings import string_dnf
from constraints.all_of import merge_conjuncts
from constraints.budget import cap_length
from constraints.fail_ways import ways
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema
from constraints.string_patterns import string_regex
from constraints.unions import conjuncts, kinds_of

_KINDS = ("object", "array", "string", "number", "boolean", "null")
_KIND_KEYS = {
    "object": {"properties", "required", "additionalProperties", "patternProperties", "minProperties",
               "maxProperties", "dependencies", "dependentRequired", "dependentSchemas", "propertyNames",
               "unevaluatedProperties"},
    "array": {"items", "additionalItems", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains",
              "minContains", "maxContains", "unevaluatedItems"},
    "string": {"pattern", "format", "minLength", "maxLength"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
}
_ANY_KEYS = {"enum", "const", "anyOf", "oneOf", "not", "if"}  # keywords that may constrain every kind
_MAX_NEST = 24  # nested `not` translations on one path (each strictly smaller; a guard, not a limit)
MAX_WAYS = 1  # successful ways to fail N generated per kind: each one repeats the rest's regex
_nest = contextvars.ContextVar("negation_nest", default=0)


def translate(tr, s: dict, path: str, depth: int) -> str | None:
    """Regex for `s` with its `not`; None when `s` has none, or an enum/const that schema_regex.py filters
    with the validator itself (exact, `not` included)."""
    if "not" not in s or "const" in s or "enum" in s:
        return None
    if _nest.get() >= _MAX_NEST:
        raise UnsupportedSchema(f"unsupported: not (nested over {_MAX_NEST} deep) (at {path})")
    token = _nest.set(_nest.get() + 1)
    try:
        return _translate(tr, s, path, depth)
    finally:
        _nest.reset(token)


def _translate(tr, s: dict, path: str, depth: int) -> str:
    neg, rest = s["not"], {k: v for k, v in s.items() if k != "not"}
    where = path + "/not"
    parts = conjuncts(tr.root, neg)
    if parts is None:
        raise UnsupportedSchema(f"unsupported: not (a schema we cannot read) (at {path})")
    # the kinds the translator would generate for the rest; with anyOf/oneOf and no type, the branches decide
    combined = "type" not in rest and ("anyOf" in rest or "oneOf" in rest)
    kinds = ["any"] if combined else tr.kinds(rest, path)
    kinds = list(_KINDS) if "any" in kinds else ["number" if k == "integer" else k for k in kinds]
    alts: list[str] = []
    refused: list[UnsupportedSchema] = []
    for kind in dict.fromkeys(kinds):
        try:
            alts += _kind_alternatives(tr, rest, neg, parts, kind, path, depth)
        except Unsatisfiable:
            continue
        except UnsupportedSchema as e:
            refused.append(e)
    if not alts:
        if refused:
            raise refused[0]
        raise Unsatisfiable(f"unsupported: not (no value we generate fails it) (at {where})")
    alts = list(dict.fromkeys(alts))
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def _with_rest(tr, rest: dict, extra: list, path: str, depth: int) -> dict:
    parts = tr.conjuncts(rest, path, depth)
    for x in extra:
        parts += tr.conjuncts(x, path + "/not", depth)
    return merge_conjuncts(parts, path)


def _kind_alternatives(tr, rest, neg, parts, kind: str, path: str, depth: int) -> list[str]:
    """Regexes of values of `kind` that satisfy `rest` and fail `neg` (whose conjuncts are `parts`)."""
    if kind not in kinds_of(tr.root, parts):  # N holds for no value of this kind
        return [tr.value(_with_rest(tr, rest, [{"type": kind}], path, depth), path, depth)]
    if not any(_constrains(p, kind) for p in parts):  # N holds for every value of this kind
        return []
    if kind in ("boolean", "null"):  # a finite kind: jsonschema filters the values (enum path)
        values = [True, False] if kind == "boolean" else [None]
        return [tr.value({**_with_rest(tr, rest, [{"enum": values}], path, depth), "not": neg}, path, depth)]
    if kind == "string":
        return [_string(tr, rest, neg, path, depth)]
    keys = tuple(dict.fromkeys([*(rest.get("properties") or {}), *rest.get("required", [])]))
    found = ways(tr.root, neg, kind, keys)
    if not found:
        why = f"no way to fail it we can write for {kind}s"
        raise UnsupportedSchema(f"unsupported: not ({why}) (at {path}/not)")
    out: list[str] = []
    errors: list[UnsupportedSchema] = []
    for way in found:
        try:
            out.append(tr.value(_with_rest(tr, rest, [{"type": kind}, *way], path, depth), path, depth))
        except UnsupportedSchema as e:  # Unsatisfiable included: this way adds nothing
            errors.append(e)
            continue
        if len(out) == MAX_WAYS:  # a subset is enough; every way is a copy of the rest's regex
            break
    if not out:  # the first way we could not write, else the first that had no value
        raise next((e for e in errors if not isinstance(e, Unsatisfiable)), errors[0])
    return out


def _integer_only(p: dict) -> bool:
    t = p.get("type")
    types = [t] if isinstance(t, str) else t if isinstance(t, list) else []
    return "integer" in types and "number" not in types


def _constrains(p: dict, kind: str) -> bool:
    """Whether some value of `kind` could fail `p` (1.5 fails `type: integer`)."""
    if kind == "number" and _integer_only(p):
        return True
    return bool((_KIND_KEYS.get(kind, set()) | _ANY_KEYS) & set(p)) or p.get("not") == {}


def _string(tr, rest: dict, neg, path: str, depth: int) -> str:
    merged = _with_rest(tr, rest, [{"type": "string"}], path, depth)
    for kw in ("anyOf", "oneOf"):  # X(b_i) and not N is X(b_i and not N): push `not` into the branches
        if isinstance(merged.get(kw), list):
            branches = [{"allOf": [b, {"not": neg}]} for b in merged[kw]]
            return tr.value({**merged, kw: branches}, path, depth)
    terms = string_dnf(tr.root, neg, path + "/not")
    if () in terms:  # N accepts every string
        raise Unsatisfiable(f"unsupported: not (it accepts every string) (at {path}/not)")
    lo, hi = int(merged.get("minLength", 0)), merged.get("maxLength")
    if hi is not None and int(hi) < lo:
        raise Unsatisfiable(f"unsupported: minLength > maxLength (at {path})")
    hi = cap_length(lo, hi, path)
    rx = string_regex(merged, lo, None if hi is None else int(hi), path, exclude=tuple(terms))
    return rx if rx is not None else ra.string_pattern(lo, None if hi is None else int(hi))


