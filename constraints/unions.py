"""anyOf / oneOf: which branches to generate, and the proof that oneOf branches cannot both match.

anyOf is a plain union: an output that validates against one branch validates against the anyOf, overlap or
not. With sibling keywords (the "parent"), `parent AND anyOf(b_i)` is the union of `allOf(parent, b_i)`.
oneOf needs "exactly one": generating from branch i is exact only when no value of branch i can validate
against another branch. `exclusive(a, b)` proves that from what the branches pin down: disjoint JSON kinds
(`type`, or the kinds of `const`/`enum` values), disjoint finite value sets, or an object key that one branch
requires whose value the other branch constrains to something disjoint (a discriminator such as
`"kind": {"const": "circle"}`) or forbids. What cannot be proven is left to object_combinators.py (required /
`not required` discrimination); failing that, each branch is narrowed to the values that fail every other
branch it may overlap (`exclusive_branches`: branch and `not` of the others, negation.py), which is exactly
"this branch and no other", generated as a subset. anyOf and oneOf side by side: oneOf(B) and anyOf(A) is
oneOf(b_i and anyOf(A)).

Schemas here are read, never translated: `$ref`s are looked up with refs.py `pointer`, and anything this
module does not understand makes the proof fail (unknown kinds, unknown values), never succeed.
"""

from __future__ import annotations

from constraints.budget import TooLarge
from constraints.object_combinators import expand_object_branches
from constraints.refs import RefBound, RefBudget, pointer
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema

_ALL_KINDS = frozenset({"object", "array", "string", "number", "boolean", "null"})
_PROOF_DEPTH = 4  # how deep into property values a discriminator is looked for


def _kind(v) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", type(None): "null", list: "array", dict: "object"}.get(type(v), "object")


def same_value(x, y) -> bool:
    """JSON equality: 1 == 1.0, but true != 1 (Python's == says True == 1)."""
    if _kind(x) != _kind(y):
        return False
    if isinstance(x, list):
        return len(x) == len(y) and all(same_value(a, b) for a, b in zip(x, y))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(same_value(x[k], y[k]) for k in x)
    return x == y


def conjuncts(root, s, seen: frozenset = frozenset()) -> list[dict] | None:
    """The dict schemas that must all hold for `s` ($refs followed, allOf flattened); None if unknown.

    [] means `s` is true/{}; a false schema is returned as {"not": {}} (no value validates it).
    """
    if s is True:
        return []
    if s is False:
        return [{"not": {}}]
    if not isinstance(s, dict):
        return None
    out = [{k: v for k, v in s.items() if k not in ("$ref", "allOf")}]
    if "$ref" in s:
        ref = s["$ref"]
        if ref in seen:
            return None
        try:
            target = pointer(root, ref, "#")
        except UnsupportedSchema:
            return None
        more = conjuncts(root, target, seen | {ref})
        if more is None:
            return None
        out += more
    for part in s.get("allOf", []) if isinstance(s.get("allOf"), list) else []:
        more = conjuncts(root, part, seen)
        if more is None:
            return None
        out += more
    return out


def kinds_of(root, parts: list[dict], depth: int = 0) -> frozenset[str]:
    """The JSON kinds a value satisfying every part can have (integer counts as number)."""
    kinds = _ALL_KINDS
    for p in parts:
        for kw in ("anyOf", "oneOf"):  # a value of the part matches a branch: the branches' kinds
            if isinstance(p.get(kw), list) and depth < _PROOF_DEPTH:
                sub = [conjuncts(root, b) for b in p[kw]]
                if all(x is not None for x in sub):
                    kinds &= frozenset().union(*(kinds_of(root, x, depth + 1) for x in sub))
        if p.get("not") == {}:
            return frozenset()
        if "const" in p:
            kinds &= {_kind(p["const"])}
        if isinstance(p.get("enum"), list):
            kinds &= {_kind(v) for v in p["enum"]}
        t = p.get("type")
        if isinstance(t, str):
            t = [t]
        if isinstance(t, list) and all(isinstance(x, str) for x in t):
            kinds &= {"number" if x == "integer" else x for x in t}
    return kinds


def values_of(parts: list[dict]) -> list | None:
    """The finite set of values every part allows (const/enum), or None when not finite."""
    out = None
    for p in parts:
        vals = [p["const"]] if "const" in p else p["enum"] if isinstance(p.get("enum"), list) else None
        if vals is not None:
            out = vals if out is None else [x for x in out if any(same_value(x, y) for y in vals)]
    return out


def _key_schemas(parts: list[dict], key: str) -> list:
    """What each part says `key`'s value must satisfy (its property schema, else additionalProperties)."""
    out = []
    for p in parts:
        props = p.get("properties")
        if isinstance(props, dict) and key in props:
            out.append(props[key])
        elif "patternProperties" in p:
            continue  # a key matching a pattern escapes additionalProperties: say nothing (unknown)
        elif "additionalProperties" in p:
            out.append(p["additionalProperties"])
    return out


def _required(parts: list[dict]) -> set[str]:
    return {
        k for p in parts if isinstance(p.get("required"), list) for k in p["required"] if isinstance(k, str)
    }


def exclusive(root, a, b, depth: int = 0) -> bool:
    """True only when provably no JSON value validates against both schemas `a` and `b`."""
    pa, pb = conjuncts(root, a), conjuncts(root, b)
    if pa is None or pb is None:
        return False
    common = kinds_of(root, pa) & kinds_of(root, pb)
    if not common:
        return True
    va, vb = values_of(pa), values_of(pb)
    if va is not None and vb is not None and not any(same_value(x, y) for x in va for y in vb):
        return True
    if common != {"object"} or depth >= _PROOF_DEPTH:
        return False
    # both can only be objects: a key one side requires that the other side cannot hold
    for req, mine, other in ((_required(pa), pa, pb), (_required(pb), pb, pa)):
        for key in req:
            for x in _key_schemas(mine, key) or [True]:
                if any(exclusive(root, x, y, depth + 1) for y in _key_schemas(other, key)):
                    return True
    return False


def pairwise_exclusive(root, branches: list) -> bool:
    """True when every two branches are provably exclusive (so any value matches at most one)."""
    return all(exclusive(root, branches[i], branches[j]) for i in range(len(branches)) for j in range(i))


def _peek(root, b, annotations: set[str]):
    """`b` with bare $refs followed (for analysis only: nothing is pushed on the recursion stack)."""
    seen: set = set()
    while isinstance(b, dict) and isinstance(b.get("$ref"), str) and not set(b) - annotations - {"$ref"}:
        if b["$ref"] in seen:
            return b
        seen.add(b["$ref"])
        try:
            b = pointer(root, b["$ref"], "#")
        except UnsupportedSchema:
            return b
    return b


def union(tr, s: dict, path: str, depth: int, annotations: set[str]) -> str:
    """The regex of `s`'s anyOf/oneOf and its sibling keywords (those not in `annotations`).

    `tr` is schema_regex.py's _Translator (its `value`, `deref` and `root` are used).
    """
    if "oneOf" in s and "anyOf" in s and isinstance(s["oneOf"], list):  # oneOf(b_i and anyOf(A)), the same
        any_of = s["anyOf"]
        s = {k: v for k, v in s.items() if k != "anyOf"}
        s["oneOf"] = [{"allOf": [b, {"anyOf": any_of}]} for b in s["oneOf"]]
    kw = "oneOf" if "oneOf" in s else "anyOf"
    branches = s[kw]
    if not isinstance(branches, list) or not branches:
        raise UnsupportedSchema(f"unsupported: {kw} that is not a non-empty list (at {path})")
    one = kw == "oneOf"
    parent = {k: v for k, v in s.items() if k != kw and k not in annotations}
    jobs: list[tuple[dict | bool, str]]
    strengthened = False
    if parent:
        peeked = [_peek(tr.root, b, annotations) for b in branches]
        merged = expand_object_branches(parent, peeked, exclusive=one, path=path)
        if merged is not None:  # the object form (required / not-required discrimination)
            for b in branches:  # the merged schemas hold the targets' content: their refs go on the stack
                tr.deref(b, path, depth)
            jobs = [(m, f"{path}/{kw}") for m in merged]
        elif not one or pairwise_exclusive(tr.root, [{"allOf": [parent, b]} for b in branches]):
            jobs = [({"allOf": [parent, b]}, f"{path}/{kw}/{i}") for i, b in enumerate(branches)]
        else:
            jobs, strengthened = exclusive_branches(tr.root, parent, branches, path), True
    elif not one or pairwise_exclusive(tr.root, branches):
        jobs = [(b, f"{path}/{kw}/{i}") for i, b in enumerate(branches)]  # refs resolve inside value()
    else:
        resolved = [tr.deref(b, path, depth) for b in branches]
        merged = expand_object_branches({"type": "object"}, resolved, exclusive=True, path=path)
        if merged is not None:
            jobs = [(m, f"{path}/{kw}") for m in merged]
        else:
            jobs, strengthened = exclusive_branches(tr.root, {}, branches, path), True
    alts: list[str] = []
    failed: list[UnsupportedSchema] = []
    too_large: list[tuple[str, Exception]] = []
    for b, at in jobs:
        mark = len(tr.left_out)
        try:
            alts.append(tr.value(b, at, depth + 1))
        except Unsatisfiable as e:  # no value (or none that ends at the $ref bound): adds nothing
            failed.append(e)
        except (TooLarge, RefBudget) as e:  # in refs.unroll's last pass the other branches may do
            if tr.leave_out_large:
                del tr.left_out[mark:]  # what the branch left out goes with it
                too_large.append((at, e))
            elif strengthened and isinstance(e, TooLarge):
                failed.append(e)  # as any branch narrowed past what we can write, below
            else:
                raise
        except UnsupportedSchema as e:  # a branch narrowed by `not`s we cannot write: a subset without it
            if not strengthened:
                raise
            failed.append(e)
    if too_large:
        if not alts:
            raise too_large[0][1]
        for at, e in too_large:  # a subset of the union: every value still matches its (one) branch
            tr.leave_out(at, e)
    if not alts:
        bound = [e for e in failed if isinstance(e, RefBound)]
        if bound:
            raise bound[0]  # names the $ref and the bound
        unsupported = [e for e in failed if not isinstance(e, Unsatisfiable)]
        if unsupported:
            why = f"branches may overlap; narrowing them: {unsupported[0]}"
            raise UnsupportedSchema(f"unsupported: oneOf ({why}) (at {path})")
        raise Unsatisfiable(f"unsupported: {kw} (no branch has a valid instance) (at {path})")
    alts = list(dict.fromkeys(alts))
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def exclusive_branches(root, parent: dict, branches: list, path: str) -> list[tuple[dict, str]]:
    """oneOf branches that may overlap, each narrowed to the values that fail every branch it may share
    values with: branch i and `not: {anyOf: [the others]}` (negation.py generates a subset of that).
    A value of the narrowed branch i validates against branch i and against no other, as oneOf wants."""
    full = [{"allOf": [parent, b]} if parent else b for b in branches]
    jobs = []
    for i, b in enumerate(full):
        others = [branches[j] for j in range(len(branches)) if j != i and not exclusive(root, b, full[j])]
        job = {"allOf": [b, {"not": {"anyOf": others}}]} if others else b
        jobs.append((job, f"{path}/oneOf/{i}"))
    return jobs
