"""JSON Schema (or a pydantic model) -> one regex over the JSON text that every match of validates.

We write our own translation instead of outlines-core's `build_regex_from_schema` because that one silently
ignores keywords (integer minimum/maximum among them) and so can generate invalid output. Here a keyword is
either honoured exactly (a subset of the valid values, never a superset) or refused with
`UnsupportedSchema("unsupported: <keyword>")`. Unknown keywords are ignored, as validators ignore them.

Output shape: properties in declared order, no extra keys, an optional space after ':' and ','. An optional
property or an anyOf/oneOf branch that no value satisfies (schema_errors.Unsatisfiable) is left out, which is
exact; when a required one has none the schema is refused. As a last resort before refusing a schema too large
to compile, an optional property whose value alone is too large is left out too, and so is a union branch
when another remains (unions.py), each named (`left_out`).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

import jsonschema

from constraints import conditionals, counting
from constraints import regex_atoms as ra
from constraints.all_of import merge_conjuncts
from constraints.budget import TooLarge, cap_items, cap_length, check_size
from constraints.drafts import check_draft
from constraints.object_regex import object_regex
from constraints.refs import REF_DEPTH, RefStack, pointer, unroll
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema
from constraints.string_patterns import string_regex
from constraints.unevaluated import without_unevaluated
from constraints.unions import union

ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "readOnly",
    "writeOnly",
    "deprecated",
    "contentMediaType",
    "contentEncoding",
    "discriminator",
    "$defs",
    "definitions",
}
UNSUPPORTED = {
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedItems",
    "$dynamicRef",
    "$recursiveRef",
}
_KINDS = ("object", "array", "string", "integer", "number", "boolean", "null")
# keywords that constrain objects only: with one of them and no `type`, only objects are generated
_OBJECT_ONLY = {
    "properties",
    "required",
    "additionalProperties",
    "dependencies",
    "dependentRequired",
    "minProperties",
    "patternProperties",
    *conditionals.OBJECT_ONLY,
}
ANY_DEPTH = 1  # nesting depth of values generated for an unconstrained ({}) schema


def load_pydantic(spec: str) -> type:
    """Import "module:ClassName" and return the class (must be a pydantic BaseModel)."""
    mod_name, _, cls_name = spec.partition(":")
    if not mod_name or not cls_name:
        raise ValueError(f"pydantic: expected 'module:ClassName', got {spec!r}")
    cls = getattr(importlib.import_module(mod_name), cls_name, None)
    if cls is None or not hasattr(cls, "model_json_schema"):
        raise ValueError(f"pydantic: {spec!r} is not a pydantic model class")
    return cls


def strict_validator(schema):
    """A validator for the schema's draft with that draft's format checker (formats are checked)."""
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@dataclass(frozen=True)
class SchemaRegex:
    regex: str
    left_out: tuple[str, ...] = ()  # parts never generated: "<pointer>: <why>" (refs.unroll's last pass)


def translate_schema(
    schema: dict | bool, *, whitespace: str = ra.WS, ref_depth: int | None = None
) -> SchemaRegex:
    """Translate a JSON Schema to a regex; raises UnsupportedSchema naming the first unsupported keyword.

    `ref_depth`: how many times one recursive $ref target may be unrolled on a path; None: the largest
    depth up to refs.REF_DEPTH whose regex fits refs.REGEX_BUDGET. `left_out` names the optional
    properties and union branches left out because they were too large to compile (refs.py `unroll`).
    """
    check_draft(schema)
    left_out: list[str] = []

    def translate(depth: int, leave_out_large: bool) -> str:
        t = _Translator(schema, whitespace, depth, leave_out_large)
        try:
            regex = t.value(schema, "#", 0)
        except TooLarge as e:
            e.recursive = t.refs.recursive  # refs.unroll retries a smaller depth only when this is set
            raise
        left_out[:] = t.left_out
        return regex

    regex = unroll(translate, ref_depth)
    return SchemaRegex(regex, tuple(left_out))


def schema_to_regex(schema: dict | bool, *, whitespace: str = ra.WS, ref_depth: int | None = None) -> str:
    """`translate_schema(...).regex`."""
    return translate_schema(schema, whitespace=whitespace, ref_depth=ref_depth).regex


class _Translator:
    def __init__(self, root: dict | bool, ws: str, ref_depth: int = REF_DEPTH, leave_out_large: bool = False):
        self.root, self.ws = root, ws
        self.refs = RefStack(root, ref_depth)
        self.leave_out_large = leave_out_large  # refs.unroll's last pass
        self.left_out: list[str] = []

    # --- entry point per subschema -------------------------------------------------------------
    def value(self, s: dict | bool, path: str, depth: int) -> str:
        with self.refs.frame():  # the $refs resolved while translating s are popped when s is done
            return self.value_in_frame(s, path, depth)

    def value_in_frame(self, s: dict | bool, path: str, depth: int) -> str:
        if s is True or s == {}:
            return self.any_value(ANY_DEPTH)
        if s is False:
            raise Unsatisfiable(f"unsupported: false schema at {path} (no value validates)")
        if not isinstance(s, dict):
            raise UnsupportedSchema(f"unsupported: {type(s).__name__} as a schema (at {path})")
        if "unevaluatedProperties" in s:  # unevaluated.py: rewritten into what the parts declare
            return self.value(without_unevaluated(self, s, path, depth), path, depth)
        for key in s:
            if key in UNSUPPORTED:
                raise UnsupportedSchema(f"unsupported: {key} (at {path})")
        if "$ref" in s:  # memoised per target and recursion state (refs.py)
            return self.refs.follow(
                s, path, lambda: self.value(self.resolve_ref(s, path, depth), path + "/$ref", depth + 1)
            )
        if "allOf" in s:
            return self.value(self.merge_all_of(s, path, depth), path, depth)
        if (rx := conditionals.translate(self, s, path, depth)) is not None:  # if/then/else, dependencies
            return rx
        if "const" in s or "enum" in s:
            return self.enum(s, path)
        if "not" in s:
            raise UnsupportedSchema(f"unsupported: not (at {path})")
        if "anyOf" in s or "oneOf" in s:
            return self.union(s, path, depth)
        kinds = self.kinds(s, path)
        alts = [self.typed(s, k, path, depth) for k in kinds]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    def kinds(self, s: dict, path: str) -> list[str]:
        t = s.get("type")
        if t is None:  # infer from the keywords present, as a validator would accept any type
            if _OBJECT_ONLY & set(s):  # not any value: its objects could break those keywords
                return ["object"]
            if {"items", "minItems", "maxItems", *counting.ARRAY_ONLY} & set(s):
                return ["array"]
            if "minLength" in s or "maxLength" in s or "format" in s or "pattern" in s:
                return ["string"]
            if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"} & set(s):
                return ["number"]
            return ["any"]
        kinds = [t] if isinstance(t, str) else list(t)
        for k in kinds:
            if k not in _KINDS:
                raise UnsupportedSchema(f"unsupported: type {k!r} (at {path})")
        if "integer" in kinds and "number" in kinds:
            kinds.remove("integer")  # number's pattern already includes the integers
        return kinds

    def typed(self, s: dict, kind: str, path: str, depth: int) -> str:
        if kind == "any":
            return self.any_value(ANY_DEPTH)
        if kind == "string":
            return self.string(s, path)
        if kind in ("integer", "number"):
            return self.numeric(s, kind, path)
        if kind == "boolean":
            return ra.BOOLEAN
        if kind == "null":
            return ra.NULL
        if kind == "array":
            return self.array(s, path, depth)
        return self.object(s, path, depth)

    # --- scalars --------------------------------------------------------------------------------
    def string(self, s: dict, path: str) -> str:
        lo, hi = int(s.get("minLength", 0)), s.get("maxLength")
        if hi is not None and int(hi) < lo:
            raise UnsupportedSchema(f"unsupported: minLength > maxLength (at {path})")
        hi = cap_length(lo, hi, path)  # budget.py: compile-time bound, shorter strings still validate
        patterned = string_regex(s, lo, None if hi is None else int(hi), path)  # pattern / format
        if patterned is not None:
            return patterned
        return ra.string_pattern(lo, None if hi is None else int(hi))

    def numeric(self, s: dict, kind: str, path: str) -> str:
        if "multipleOf" in s:
            return counting.multiple_of(self, s, kind, path)
        lo, hi = s.get("minimum"), s.get("maximum")
        lo_x, hi_x = False, False
        xlo, xhi = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
        if isinstance(xlo, bool):  # draft 4: a flag on minimum
            lo_x = xlo
        elif xlo is not None:
            lo, lo_x = (xlo, True) if lo is None or xlo >= lo else (lo, False)
        if isinstance(xhi, bool):
            hi_x = xhi
        elif xhi is not None:
            hi, hi_x = (xhi, True) if hi is None or xhi <= hi else (hi, False)
        try:
            if kind == "number":
                if lo is None and hi is None:
                    return ra.NUMBER
                return ra.number_range(lo, hi, lo_x, hi_x)
            import math

            ilo = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
            ihi = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
            return ra.integer_range(ilo, ihi)
        except ValueError as e:
            raise UnsupportedSchema(f"unsupported: minimum/maximum ({e}) (at {path})") from None

    def enum(self, s: dict, path: str) -> str:
        values = [s["const"]] if "const" in s else list(s["enum"])
        rest = {k: v for k, v in s.items() if k not in ("const", "enum")}
        rest.setdefault("$defs", self.root.get("$defs", {}) if isinstance(self.root, dict) else {})
        rest.setdefault(
            "definitions", self.root.get("definitions", {}) if isinstance(self.root, dict) else {}
        )
        checker = strict_validator(rest)
        ok = [v for v in values if checker.is_valid(v)]  # only values the rest of the schema accepts
        if not ok:
            raise Unsatisfiable(f"unsupported: enum/const with no value valid under the schema (at {path})")
        lits = sorted({ra.json_literal(v) for v in ok}, key=lambda x: (-len(x), x))
        return lits[0] if len(lits) == 1 else "(?:" + "|".join(lits) + ")"

    # --- containers -----------------------------------------------------------------------------
    def array(self, s: dict, path: str, depth: int) -> str:
        if counting.handles_array(s):  # uniqueItems, tuple items
            return counting.array(self, s, path, depth)
        items = s.get("items", {})
        if isinstance(items, list):
            raise UnsupportedSchema(f"unsupported: items as a list (tuple validation) (at {path})")
        lo, hi = int(s.get("minItems", 0)), s.get("maxItems")
        if hi is not None and int(hi) < lo:
            raise UnsupportedSchema(f"unsupported: minItems > maxItems (at {path})")
        hi = cap_items(lo, hi, path)  # budget.py: compile-time bound, shorter arrays still validate
        if hi is not None and int(hi) == 0:
            return r"\[\]"
        try:
            item = self.value(items, path + "/items", depth + 1)
        except Unsatisfiable:  # no item value (or none that ends at the $ref bound, refs.py)
            if lo > 0:
                raise
            return r"\[\]"
        sep = "," + self.ws
        more_lo = max(lo - 1, 0)
        more_hi = "" if hi is None else str(int(hi) - 1)
        body = f"{item}(?:{sep}{item}){{{more_lo},{more_hi}}}"
        rx = rf"\[{body}\]" if lo >= 1 else rf"\[(?:{body})?\]"
        return check_size(rx, path, "array (items x count)", written_again=len(item))

    def object(self, s: dict, path: str, depth: int) -> str:
        return object_regex(self, s, path, depth)  # object_regex.py: keys, dependencies, size fallback

    def leave_out(self, where: str, too_large: Exception) -> None:
        why = re.sub(r" \(at [^()]*\)$", "", str(too_large).removeprefix("unsupported: "))
        self.left_out.append(f"{where}: {why}")

    def union(self, s: dict, path: str, depth: int) -> str:
        return union(self, s, path, depth, ANNOTATIONS)  # unions.py: overlap for anyOf, exclusivity for oneOf

    # --- references and merging -----------------------------------------------------------------
    def resolve_ref(self, s: dict, path: str, depth: int) -> dict:
        """The schema s's $ref names, merged with s's sibling keywords (they hold too, as in allOf).

        The ref is pushed on the recursion stack (refs.py) until the subschema being translated is done;
        RefBound when its target is already there ref-depth times.
        """
        if any(k != "$ref" and k not in ANNOTATIONS for k in s):
            return self.merge_all_of(s, path, depth)  # conjuncts() resolves (and pushes) the $ref
        target = self.lookup(s["$ref"], path)
        self.refs.enter(s["$ref"], path)
        return target

    def lookup(self, ref, path: str):
        return pointer(self.root, ref, path)

    def deref(self, s, path: str, depth: int):
        while isinstance(s, dict) and "$ref" in s:
            s = self.resolve_ref(s, path, depth)
            depth += 1
        return s

    def conjuncts(self, s, path: str, depth: int) -> list[tuple[str, dict]]:
        """(JSON pointer, schema) of each schema that must hold for `s`: $refs resolved, nested allOf flat.

        Each $ref followed is pushed on the recursion stack (refs.py), so `allOf: [{$ref: <itself>}]` hits
        the ref-depth bound and is refused, not unrolled forever.
        """
        if s is True:
            return []
        if s is False:
            raise Unsatisfiable(f"unsupported: allOf with a false schema (no value validates) (at {path})")
        if not isinstance(s, dict):
            raise UnsupportedSchema(f"unsupported: {type(s).__name__} as a schema (at {path})")
        if "$ref" in s:
            target = self.resolve_ref({"$ref": s["$ref"]}, path, depth)  # the lookup and the push
            siblings = {k: v for k, v in s.items() if k != "$ref"}
            return self.conjuncts(target, path + "/$ref", depth + 1) + self.conjuncts(siblings, path, depth)
        own = {k: v for k, v in s.items() if k != "allOf" and k not in ANNOTATIONS}
        parts = [(path, own)] if own else []
        for i, part in enumerate(s.get("allOf", [])):
            parts += self.conjuncts(part, f"{path}/allOf/{i}", depth)
        return parts

    def merge_all_of(self, s: dict, path: str, depth: int) -> dict:
        """One schema (no allOf, no $ref at its top) that holds exactly when all of s's conjuncts hold."""
        return merge_conjuncts(self.conjuncts(s, path, depth), path)

    def any_value(self, depth: int) -> str:
        """Any JSON value up to `depth` nesting; repetition with '*' keeps the automaton small."""
        alts = [ra.string_pattern(), ra.NUMBER, ra.BOOLEAN, ra.NULL]
        if depth > 0:
            inner, sep = self.any_value(depth - 1), "," + self.ws
            alts.append(rf"\[(?:{inner}(?:{sep}{inner})*)?\]")
            pair = f"{ra.string_pattern()}:{self.ws}{inner}"
            alts.append(rf"\{{(?:{pair}(?:{sep}{pair})*)?\}}")
        return "(?:" + "|".join(alts) + ")"
