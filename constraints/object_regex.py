"""One object schema's regex: declared, required and dependency-gated keys, pattern keys, free-form maps,
and what is left out when the object is too large to compile.

Keys are generated in declared order (regex_atoms.py `object_body`); a required key no value satisfies
refuses the object, an optional one is left out (exact). In constraints/refs.py `unroll`'s last pass
(`tr.leave_out_large`), an optional property whose value alone is too large is left out, and when the
whole object is still too large its largest optional fields are left out until it fits: a subset of the
valid objects, so sound, each one named in `translate_schema(...).left_out` (schema_regex.py).
"""

from __future__ import annotations

from constraints import counting
from constraints import regex_atoms as ra
from constraints.budget import TooLarge, check_size, estimate_states
from constraints.object_keys import close_required, dependency_lists, is_forbidden, key_schema
from constraints.pattern_properties import pairs_only, pattern_pairs, with_extra_pairs
from constraints.refs import RefBudget
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema


def object_regex(tr, s: dict, path: str, depth: int) -> str:
    """The regex of object schema `s` (tr: schema_regex.py's translator)."""
    props: dict = {k: key_schema(s, k) for k in s.get("properties", {})}  # with matching patterns
    ap = s.get("additionalProperties", True)
    for kw in ("dependencies", "dependentRequired"):
        for key, dep in s.get(kw, {}).items():
            if not isinstance(dep, list):
                raise UnsupportedSchema(f"unsupported: {kw} with a schema (at {path}/{kw}/{key})")
    deps = dependency_lists(s)
    required = close_required(s.get("required", []), deps)
    for key in required:  # undeclared (required or via dependencies): additionalProperties governs it
        props.setdefault(key, key_schema(s, key))
    for key in required:
        if is_forbidden(props[key]):  # unsatisfiable: refuse rather than emit an invalid object
            kw = "properties/" + key if key in s.get("properties", {}) else "additionalProperties"
            why = "required" if key in s.get("required", []) else "required (by dependencies)"
            raise Unsatisfiable(
                f"unsupported: {why} property {key!r} forbidden by {kw.split('/')[0]} "
                f"(no object validates) (at {path}/{kw})"
            )
    forbidden = {k for k, v in props.items() if is_forbidden(v)}
    # an optional key is emitted only when its dependencies are present anyway
    emit_optional = [
        k for k in props if k not in required + list(forbidden) and set(deps.get(k, [])) <= set(required)
    ]
    fields = []
    for key in [k for k in props if k in required or k in emit_optional]:
        mark = len(tr.left_out)
        try:
            val = tr.value(props[key], f"{path}/properties/{key}", depth + 1)
        except Unsatisfiable:
            if key in required:
                raise
            continue  # no value validates: a valid object never has this key
        except (RefBudget, TooLarge) as e:  # its value alone is too large to compile
            if key in required or not tr.leave_out_large:
                raise
            del tr.left_out[mark:]  # what its value left out goes with it
            tr.leave_out(f"{path}/properties/{key}", e)
            continue
        fields.append((f"{ra.json_literal(key)}:{tr.ws}{val}", key in required, key))
    if s.get("patternProperties"):  # keys from the patterns' languages (pattern_properties.py)
        pairs = pattern_pairs(tr, s, props, deps, path, depth)
        if pairs and not props and int(s.get("minProperties", 0)) == 1:  # one pattern key makes the count
            return pairs_only(pairs, "," + tr.ws)
        return with_extra_pairs(counting.count_fields([f[:2] for f in fields], s, path), pairs, "," + tr.ws)
    if not props and ap is not False:  # a free-form map: string keys, values per additionalProperties
        if deps:  # any generated key could be a dependency's trigger
            raise UnsupportedSchema(f"unsupported: dependencies on a map without properties (at {path})")
        try:
            apv = ap if isinstance(ap, dict) else {}
            val = tr.value(apv, path + "/additionalProperties", depth + 1)
        except Unsatisfiable:  # no value for any key (or none that ends at the $ref bound): only {}
            if int(s.get("minProperties", 0)) > 0:
                raise
            return r"\{\}"
        return counting.free_map(tr, s, val, path, depth)
    return _sized(tr, fields, s, path)


def _sized(tr, fields: list[tuple[str, bool, str]], s: dict, path: str) -> str:
    """The object's regex from (field regex, required, key); when it is too large to compile, in
    refs.unroll's last pass, its largest optional fields are left out (named): the fewest of them, largest
    (most automaton states) first, that make it fit, found by doubling then bisecting the count (an object
    of 150 optional fields would otherwise be rebuilt once per field: seconds of string building)."""

    def attempt(k: int) -> str | TooLarge:
        gone = {id(f) for f in order[:k]}
        kept = [f[:2] for f in fields if id(f) not in gone]
        obj = ra.object_body(counting.count_fields(kept, s, path), "," + tr.ws)
        try:  # budget.py: refuse an automaton too big to compile
            return check_size(obj, path, "object")
        except TooLarge as e:
            return e

    order: list = []  # set below, read by `attempt` from 1 on
    first = attempt(0)
    if isinstance(first, str):  # it fits: no field is left out, and none needs its size estimated
        return first
    # largest by estimated automaton states (a string's maxLength hardly shows in its text), then by text;
    # the sort is stable, so ties keep the fields' order
    order = sorted((f for f in fields if not f[1]), key=lambda f: (-estimate_states(f[0]), -len(f[0])))
    if not tr.leave_out_large or not order:
        raise first
    lo, hi = 0, 1  # attempt(lo) is too large; find the smallest hi whose attempt fits
    while hi < len(order) and isinstance(attempt(hi), TooLarge):
        lo, hi = hi, min(2 * hi, len(order))
    best = attempt(hi)
    if isinstance(best, TooLarge):  # every optional field left out and still too large
        for f in order:
            tr.leave_out(f"{path}/properties/{f[2]}", first)
        raise best
    while hi - lo > 1:
        mid = (lo + hi) // 2
        got = attempt(mid)
        if isinstance(got, str):
            hi, best = mid, got
        else:
            lo = mid
    for f in order[:hi]:
        tr.leave_out(f"{path}/properties/{f[2]}", first)
    return best
