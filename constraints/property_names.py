"""propertyNames: every key of the object must validate against a string schema.

Declared keys (properties, required, dependency keys) are checked against it once, with jsonschema: a key it
rejects is never generated (an optional one is marked forbidden; a required one makes the object
unsatisfiable). Keys of a free-form map are drawn from the schema's own string language (key_pattern,
used by counting.free_map), so the regex for strings, enums and formats is reused as is.
"""

from __future__ import annotations

import jsonschema

from constraints.all_of import merge_conjuncts
from constraints.object_keys import close_required, dependency_lists
from constraints.schema_errors import Unsatisfiable


def validator_at_root(root, sub):
    """A format-checking validator for subschema `sub` that resolves $refs against the root's definitions."""
    s = dict(sub) if isinstance(sub, dict) else {"allOf": [sub]}
    if isinstance(root, dict):
        for k in ("$defs", "definitions", "$schema"):
            if k in root:
                s.setdefault(k, root[k])
    cls = jsonschema.validators.validator_for(s)
    return cls(s, format_checker=cls.FORMAT_CHECKER)


def key_pattern(tr, pn, path: str, depth: int) -> str:
    """Regex for one key (a quoted JSON string) allowed by propertyNames schema `pn`."""
    parts = tr.conjuncts(pn, path + "/propertyNames", depth) + [(path, {"type": "string"})]
    return tr.value(merge_conjuncts(parts, path + "/propertyNames"), path + "/propertyNames", depth)


def filter_declared(tr, s: dict, path: str) -> dict | None:
    """`s` with each optional declared key propertyNames rejects set to false; None when nothing changes.

    Raises Unsatisfiable when a required key (directly or through dependencies) is rejected.
    """
    pn = s["propertyNames"]
    check = validator_at_root(tr.root, pn)
    props = dict(s.get("properties", {}))
    required = close_required(s.get("required", []), dependency_lists(s))
    for key in required:
        if not check.is_valid(key):
            raise Unsatisfiable(
                f"unsupported: required property {key!r} rejected by propertyNames (no object validates) "
                f"(at {path}/propertyNames)"
            )
    changed = False
    for key, v in props.items():
        if v is not False and not check.is_valid(key):
            props[key], changed = False, True
    return {**s, "properties": props} if changed else None
