"""anyOf / oneOf over one object: expand into plain object schemas whose every instance is provably valid.

Function-call schemas often say "oneOf: [{required: [radius]}, {required: [length, width]}]" (optionally with
`not: {required: [...]}` or `properties: {shape: {const: ...}}`). For each branch we emit objects with a fixed
set of branch-relevant keys (the parent's required keys plus the branch's), drop the optional keys another
branch (oneOf) or the branch's own `not` mentions, and keep the rest optional (they cannot change a verdict).
A key's value schema is what the parent and the branch both say about it, each one's additionalProperties
included (object_keys.py): a closed parent forbids a key only the branch declares, and vice versa.
For oneOf each kept branch must provably fail every other branch (a required key absent, a forbidden key
present, a `not required` satisfied, or a const mismatch); a branch we cannot prove exclusive is dropped.
Returns None when no branch survives or a branch uses keywords outside this small language.
"""

from __future__ import annotations

from constraints.object_keys import (
    OBJECT_KEYS,
    close_required,
    conjoin,
    dependency_lists,
    is_forbidden,
    key_schema,
)

_BRANCH_KEYS = {"required", "properties", "not", "type", "additionalProperties", "title", "description"}


def _values(v) -> list | None:
    """The finite set of values a property schema allows, when it is a const/enum (else None)."""
    if not isinstance(v, dict):
        return None
    if "const" in v:
        return [v["const"]]
    if "enum" in v:
        return list(v["enum"])
    if "allOf" in v:  # every part must hold: intersect the finite ones
        out = None
        for part in v["allOf"]:
            vals = _values(part)
            if vals is not None:
                out = vals if out is None else [x for x in out if x in vals]
        return out
    return None


def _normalise(b) -> tuple[set, set | None, dict] | None:
    if not isinstance(b, dict) or set(b) - _BRANCH_KEYS:
        return None
    if b.get("type", "object") != "object":
        return None
    not_req = None
    if "not" in b:
        if not isinstance(b["not"], dict) or set(b["not"]) != {"required"}:
            return None
        not_req = set(b["not"]["required"])
    return set(b.get("required", [])), not_req, dict(b.get("properties", {}))


def _violates(branch: tuple[set, set | None, dict], present: set, props: dict) -> bool:
    """True when an object with exactly `present` of the mentioned keys (values per `props`) fails it."""
    req, not_req, bprops = branch
    if not req <= present:
        return True
    if not_req is not None and not_req <= present:
        return True
    for k, v in bprops.items():
        if k not in present:
            continue
        if is_forbidden(v):
            return True
        allowed, ours = _values(v), _values(props.get(k))
        if allowed is not None and ours is not None and not any(o in allowed for o in ours):
            return True
    return False


def expand_object_branches(parent: dict, branches: list, *, exclusive: bool, path: str) -> list[dict] | None:
    """Plain object schemas (no anyOf/oneOf) whose union is a subset of parent AND (any|one)Of(branches).

    Each key's value schema is what both the parent and the branch say about it (object_keys.py): a key
    only the branch declares still takes the parent's additionalProperties (False: the key is left out),
    and a key only the parent declares takes the branch's. The schemas returned list every key they allow
    and close the object (additionalProperties false), so no key outside that analysis is ever emitted.
    """
    norm = [_normalise(b) for b in branches]
    if any(n is None for n in norm) or not norm:
        return None
    if parent.get("type", "object") != "object":
        return None
    deps = dependency_lists(parent)
    keys = [req | (not_req or set()) | set(bprops) for req, not_req, bprops in norm]
    rest = {k: v for k, v in parent.items() if k not in (*OBJECT_KEYS, "type")}
    out: list[dict] = []
    for i, (branch, (_, not_req, bprops)) in enumerate(zip(branches, norm)):
        present_order = close_required([*parent.get("required", []), *branch.get("required", [])], deps)
        present = set(present_order)
        if not_req is not None and not_req <= present:
            continue  # this branch can never be satisfied with its own required keys
        props = {}
        for k in dict.fromkeys([*parent.get("properties", {}), *bprops, *present_order]):
            v = conjoin([key_schema(parent, k), key_schema(branch, k)])
            if not is_forbidden(v):
                props[k] = v
        if not present <= set(props):
            continue  # a key this branch needs is forbidden by the parent or the branch
        if exclusive and not all(_violates(norm[j], present, props) for j in range(len(norm)) if j != i):
            continue
        # optional keys stay optional unless another branch's verdict (oneOf) or our own `not` depends on them
        others = set().union(*(keys[j] for j in range(len(norm)) if j != i)) if exclusive else set()
        drop = others | (not_req or set())
        keep = {k: v for k, v in props.items() if k in present or k not in drop}
        closed = {"type": "object", "properties": keep, "additionalProperties": False}
        out.append({**rest, **closed, "required": [k for k in keep if k in present]})
    return out or None


def _kind_set(s) -> set[str] | None:
    if not isinstance(s, dict):
        return None
    if "const" in s or "enum" in s:
        vals = [s["const"]] if "const" in s else s["enum"]
        return {_json_kind(v) for v in vals}
    t = s.get("type")
    if t is None:
        return None
    kinds = {t} if isinstance(t, str) else set(t)
    return {"number" if k == "integer" else k for k in kinds}


def _json_kind(v) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", type(None): "null", list: "array", dict: "object"}[type(v)]


def disjoint_kinds(branches: list) -> bool:
    """True when the branches' JSON kinds are known and pairwise disjoint, so at most one can match."""
    seen: set[str] = set()
    for b in branches:
        ks = _kind_set(b)
        if ks is None or ks & seen:
            return False
        seen |= ks
    return True
