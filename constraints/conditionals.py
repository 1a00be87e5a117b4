"""Conditional keywords: if/then/else, dependentSchemas and schema-form `dependencies`, propertyNames.

Each is rewritten into plain conjunctions (merged as allOf, all_of.py) whose every instance validates:
- if/then/else: first generate values satisfying `if` AND `then` (then `else` is moot), `if`'s properties
  present first (an `if` that holds only because its keys are absent decides nothing). If that part has no
  value or cannot be generated, generate `else` together with a decidable failure of `if`: a value of a type
  `if` excludes, or an object missing one of the keys `if` requires, or anything when `if` is false, or
  else `not: if` as negation.py generates it.
  Otherwise refuse, naming if/then/else and the pointer
  (https://json-schema.org/understanding-json-schema/reference/conditionals#ifthenelse).
- dependentSchemas / `dependencies` with a schema: a trigger key that is always present (required,
  directly or through dependencies) brings its schema in as one more conjunct; an optional trigger key is
  never generated, so its schema never applies.
- propertyNames: declared keys it rejects are never generated (property_names.py).
- not: values that provably fail the negated schema, kind by kind (negation.py).
"""

from __future__ import annotations

import contextvars

from constraints import negation
from constraints.all_of import merge_conjuncts
from constraints.object_keys import close_required, dependency_lists
from constraints.property_names import filter_declared
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema
from constraints.unions import same_value

_CONDITIONAL = ("if", "then", "else")
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
OBJECT_ONLY = {"dependentSchemas", "propertyNames", "maxProperties"}  # with no `type`: objects only
MAX_TRIES = 256  # if/then/else sides tried within one outermost if/then/else (nested ones included)
_tries: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("if_tries", default=None)


def translate(tr, s: dict, path: str, depth: int) -> str | None:
    """Regex for `s` when it uses a conditional keyword this module rewrites; None when it uses none."""
    if "if" in s:
        return _if_then_else(tr, s, path, depth)
    if "then" in s or "else" in s:  # without `if` both are ignored by validators
        return tr.value({k: v for k, v in s.items() if k not in _CONDITIONAL}, path, depth)
    if _schema_dependencies(s):
        return tr.value(_dependent_schemas(tr, s, path, depth), path, depth)
    if "propertyNames" in s:
        narrowed = filter_declared(tr, s, path)
        if narrowed is not None:
            return tr.value(narrowed, path, depth)
    return negation.translate(tr, s, path, depth)  # None without `not`


def _if_then_else(tr, s: dict, path: str, depth: int) -> str:
    budget = _tries.get()
    token = _tries.set([0]) if budget is None else None  # the outermost if/then/else opens the budget
    try:
        return _choose(tr, s, path, depth, _tries.get())
    finally:
        if token is not None:
            _tries.reset(token)


def _choose(tr, s: dict, path: str, depth: int, tried: list[int]) -> str:
    rest = {k: v for k, v in s.items() if k not in _CONDITIONAL}
    cond, then, other = s["if"], s.get("then", True), s.get("else", True)
    rest_parts = tr.conjuncts(rest, path, depth)  # once: every call pushes rest's $refs again (refs.py)
    choices = []
    if isinstance(cond, dict) and set(cond.get("properties", {})) - set(cond.get("required", [])):
        # `if` holding because its keys are present and match, not vacuously: a chain of conditionals on
        # one discriminator key (allOf of if {k: const} / then) then decides at each step, no backtracking
        present = {**cond, "required": list(dict.fromkeys([*cond.get("required", []), *cond["properties"]]))}
        choices.append(
            lambda: tr.conjuncts(present, path + "/if", depth) + tr.conjuncts(then, path + "/then", depth)
        )
    keys_present = len(choices)  # 1 when the keys-present side leads; the plain if+then side comes next
    if cond is not False:
        choices.append(
            lambda: tr.conjuncts(cond, path + "/if", depth) + tr.conjuncts(then, path + "/then", depth)
        )
    fails = negations(cond)
    if _fails_already(rest_parts, cond, path):  # `rest` pins a key to values `if` excludes
        fails.insert(0, {})
    if isinstance(cond, dict) and cond:  # any other way to fail `if` (negation.py), after the cheap ones
        fails.append({"not": cond})
    for fails_if in fails:
        choices.append(lambda f=fails_if: [(path + "/if", f)] + tr.conjuncts(other, path + "/else", depth))
    first: UnsupportedSchema | None = None
    for i, parts in enumerate(choices):
        tried[0] += 1
        if tried[0] > MAX_TRIES:  # nested conditionals (allOf of many) backtrack: bound the search
            raise UnsupportedSchema(
                f"unsupported: if/then/else (over {MAX_TRIES} nested if/then/else sides tried) (at {path}/if)"
            )
        try:
            merged = merge_conjuncts(rest_parts + parts(), path)
            _check_required_values(merged, path)
            return tr.value(merged, path, depth)
        except UnsupportedSchema as e:  # Unsatisfiable included: try the other side
            if i >= keys_present:  # the plain if+then side's reason says more than the keys-present one
                first = first or getattr(e, "cause", e)  # a nested if/then/else: its own first cause
    err = UnsupportedSchema(
        f"unsupported: if/then/else (neither if+then nor else with a provable failure of if can be "
        f"generated; first: {first}) (at {path}/if)"
    )
    err.cause = first
    raise err


def _values(s) -> list | None:
    """The values that `s`'s const/enum parts, its allOf ones too (nested), all allow (JSON equality:
    1 == 1.0, true != 1); None when it has none."""
    common, todo = None, [s]
    while todo:  # merge_conjuncts nests allOf parts
        part = todo.pop()
        if not isinstance(part, dict):
            continue
        todo += part.get("allOf", [])
        values = [part["const"]] if "const" in part else part.get("enum")
        if isinstance(values, list):
            common = values if common is None else [x for x in common if _among(x, values)]
    return common


def _among(x, values: list) -> bool:
    return any(same_value(x, y) for y in values)


def _check_required_values(s: dict, path: str) -> None:
    """Unsatisfiable when a required property's const/enum parts share no value. Found here, a side that
    cannot hold fails at once instead of after every conditional nested below it was chosen (a chain of
    if {k: const} / then on one key would otherwise backtrack exponentially)."""
    props = s.get("properties", {})
    for key in s.get("required", []):
        common = _values(props.get(key))
        if common is not None and not common:
            raise Unsatisfiable(f"unsupported: required property {key!r}: its const/enum parts share no "
                                f"value (at {path})")


def _fails_already(rest_parts: list, cond, path: str) -> bool:
    """Whether every object the rest (its conjuncts) allows fails `cond` on a key: required by the rest,
    with const/enum values that `cond`'s const/enum for that key excludes. Then `else` needs no `not`
    (negation.py would have to write one more way to fail per conditional of a chain)."""
    if not isinstance(cond, dict) or not cond.get("properties"):
        return False
    try:
        merged = merge_conjuncts(rest_parts, path)
    except UnsupportedSchema:
        return False
    props = merged.get("properties", {})
    for key, sub in cond["properties"].items():
        have, want = _values(props.get(key)), _values(sub)
        if key in merged.get("required", []) and have is not None and want is not None and not any(
            _among(x, want) for x in have
        ):
            return True
    return False


def negations(cond) -> list[dict]:
    """Schemas whose every instance fails `cond` (each a sound way to be in the `else` case)."""
    if cond is False:
        return [{}]
    if not isinstance(cond, dict):
        return []
    out = []
    if "type" in cond:
        t = cond["type"]
        kinds = {t} if isinstance(t, str) else set(t)
        if kinds & {"integer", "number"}:  # 2.0 is an integer to a validator: leave all numbers out
            kinds |= {"integer", "number"}
        other = [k for k in _TYPES if k not in kinds]
        if other:
            out.append({"type": other if len(other) > 1 else other[0]})
    for key in cond.get("required", []):  # an object without `key` fails `required`, so fails `cond`
        out.append({"type": "object", "properties": {key: False}})
    return out


def _schema_dependencies(s: dict) -> bool:
    return any(
        not isinstance(d, list) for kw in ("dependencies", "dependentSchemas") for d in s.get(kw, {}).values()
    )


def _dependent_schemas(tr, s: dict, path: str, depth: int) -> dict:
    """`s` without schema-form dependencies: present triggers' schemas merged in, optional ones dropped.

    A merged schema's `required` keys are present too, so their own dependent schemas apply: iterate until
    no new trigger becomes present.
    """
    lists = dependency_lists(s)
    schemas = {
        (kw, key): dep
        for kw in ("dependencies", "dependentSchemas")
        for key, dep in s.get(kw, {}).items()
        if not isinstance(dep, list) and dep is not True and dep != {}
    }
    present = close_required(s.get("required", []), lists)
    parts: list = []
    merged: set = set()
    while True:
        due = [(kw, key) for kw, key in schemas if key in present and (kw, key) not in merged]
        if not due:
            break
        for kw, key in due:
            merged.add((kw, key))
            new = tr.conjuncts(schemas[kw, key], f"{path}/{kw}/{key}", depth)
            parts += new
            present = close_required(present + [k for _, p in new for k in p.get("required", [])], lists)
    own = {k: v for k, v in s.items() if k not in ("dependencies", "dependentSchemas")}
    for kw in ("dependencies", "dependentSchemas"):
        kept = {k: d for k, d in s.get(kw, {}).items() if isinstance(d, list)}
        if kept:
            own[kw] = kept
    props = dict(s.get("properties", {}))
    for _, key in schemas:  # an optional trigger is never generated, so its schema never applies
        if key not in present:
            props[key] = False
    if props:
        own["properties"] = props
    return merge_conjuncts(tr.conjuncts(own, path, depth) + parts, path)
