"""Counting keywords: minProperties/maxProperties, uniqueItems, tuple arrays (additionalItems/prefixItems),
multipleOf. Each one is honoured by generating a provably valid subset, or refused by name.

- Objects: optional keys are forced in, in declared order, until `minProperties` holds; `maxProperties` keeps
  only the first optional keys that fit. A free-form map (no `properties`) repeats its pair between the
  bounds; for a minimum of 2 or more, the first pairs' keys have distinct lengths (1, 2, ...) so a repeated
  key can never merge two pairs into one property.
- Arrays: the tuple keyword pair depends on the validator's draft (jsonschema picks it from `$schema`):
  before 2020-12 `items: [...]` plus `additionalItems`; from 2020-12 `prefixItems` plus `items`
  (https://json-schema.org/understanding-json-schema/reference/array#tupleValidation). `uniqueItems`: at
  most one item, or members of a small finite domain (enum/const/boolean) in strictly increasing list order,
  which makes every array duplicate-free by construction.
- `multipleOf` m: when 1/m is an integer K (0.01, 0.1, 1, ...) every integer is a multiple of m, also under
  jsonschema's float test `int(n / m) == n / m`: fl(m) * K differs from 1 by at most 2^-54, so n / fl(m)
  lies within half an ulp of the integer n * K and rounds to it. Otherwise a bounded integer range with at
  most MAX_MULTIPLES multiples is enumerated; anything else is refused.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jsonschema

from constraints import regex_atoms as ra
from constraints.property_names import key_pattern, validator_at_root
from constraints.schema_errors import Unsatisfiable, UnsupportedSchema

MAX_DOMAIN = 32  # uniqueItems over a finite domain: at most this many distinct members
MAX_MULTIPLES = 256  # multipleOf on a bounded integer range: at most this many literals
ARRAY_ONLY = {"uniqueItems", "additionalItems", "prefixItems"}  # with no `type`, only arrays are generated


# --- objects -------------------------------------------------------------------------------------------
def count_fields(fields: list[tuple[str, bool]], s: dict, path: str) -> list[tuple[str, bool]]:
    """The object's (field regex, required) list with minProperties/maxProperties enforced."""
    lo, hi = int(s.get("minProperties", 0)), s.get("maxProperties")
    n_req = sum(r for _, r in fields)
    if hi is not None and n_req > int(hi):
        raise Unsatisfiable(
            f"unsupported: maxProperties {hi} below the {n_req} required properties (no object validates) "
            f"(at {path})"
        )
    out = []
    for f, r in fields:  # force optional keys in, in declared order, until the minimum holds
        if not r and n_req < lo:
            r, n_req = True, n_req + 1
        out.append((f, r))
    if n_req < lo:
        raise UnsupportedSchema(
            f"unsupported: minProperties {lo} (only {len(fields)} properties can be generated) (at {path})"
        )
    if hi is None:
        return out
    room = int(hi) - n_req
    kept = []
    for f, r in out:  # keep only the first optional keys that fit under the maximum
        if r or room > 0:
            kept.append((f, r))
            room -= 0 if r else 1
    return kept


def free_map(tr, s: dict, val: str, path: str, depth: int) -> str:
    """`{key: val, ...}` for an object without `properties`: keys per propertyNames, count per min/max."""
    lo, hi = int(s.get("minProperties", 0)), s.get("maxProperties")
    hi = None if hi is None else int(hi)
    if hi is not None and hi < lo:
        raise Unsatisfiable(f"unsupported: minProperties > maxProperties (no object validates) (at {path})")
    key = ra.string_pattern()
    if "propertyNames" in s:
        if s["propertyNames"] is False:
            if lo > 0:
                raise Unsatisfiable(f"unsupported: minProperties with propertyNames false (at {path})")
            return r"\{\}"
        key = key_pattern(tr, s["propertyNames"], path, depth)
        if lo >= 2:  # distinct keys cannot be forced inside an arbitrary key language
            raise UnsupportedSchema(f"unsupported: minProperties {lo} with propertyNames (at {path})")
    if hi == 0:
        return r"\{\}"
    sep = "," + tr.ws
    pair = f"{key}:{tr.ws}{val}"
    if lo <= 1:
        more = "*" if hi is None else f"{{0,{hi - 1}}}"
        body = f"{pair}(?:{sep}{pair}){more}"
        return rf"\{{{body}\}}" if lo == 1 else rf"\{{(?:{body})?\}}"
    # keys of decoded lengths 1..lo are pairwise distinct: at least lo properties survive parsing
    firsts = sep.join(f"{ra.string_pattern(i, i)}:{tr.ws}{val}" for i in range(1, lo + 1))
    more = "*" if hi is None else f"{{0,{hi - lo}}}"
    return rf"\{{{firsts}(?:{sep}{pair}){more}\}}"


# --- arrays --------------------------------------------------------------------------------------------
def handles_array(s: dict) -> bool:
    """Whether counting.array (not the plain item repetition) must translate the array schema `s`."""
    return bool(s.get("uniqueItems")) or isinstance(s.get("items"), list) or "prefixItems" in s


def tuple_parts(root, s: dict) -> tuple[list, object, str, str]:
    """(prefix schemas, schema of later items (False: none allowed), prefix keyword, rest keyword)."""
    cls = jsonschema.validators.validator_for(root if isinstance(root, dict) else {})
    if "prefixItems" in cls.VALIDATORS:  # draft 2020-12 and later
        items = s.get("items", True)
        if isinstance(items, list):  # not a 2020-12 schema: jsonschema fails on any non-empty instance
            return [], False, "prefixItems", "items (a list under draft 2020-12)"
        return list(s.get("prefixItems", [])), items, "prefixItems", "items"
    items = s.get("items", True)
    if isinstance(items, list):
        return list(items), s.get("additionalItems", True), "items", "additionalItems"
    return [], items, "items", "items"  # prefixItems is not a keyword of this draft: ignored


def array(tr, s: dict, path: str, depth: int) -> str:
    """Regex for an array with tuple items and/or uniqueItems (see the module docstring)."""
    prefix, rest, pkw, rkw = tuple_parts(tr.root, s)
    lo, hi = int(s.get("minItems", 0)), s.get("maxItems")
    hi = None if hi is None else int(hi)
    if hi is not None and hi < lo:
        raise UnsupportedSchema(f"unsupported: minItems > maxItems (at {path})")
    if hi == 0:
        return r"\[\]"
    if s.get("uniqueItems") and (hi is None or hi > 1):
        if not prefix:
            dom = _finite_domain(tr, rest, path, depth)
            if dom is not None:
                return _unique_subsequences(dom, lo, hi, "," + tr.ws, path)
        if lo > 1:
            raise UnsupportedSchema(
                f"unsupported: uniqueItems with minItems {lo} (items not from a finite enum/const/boolean "
                f"domain of at most {MAX_DOMAIN}) (at {path})"
            )
        hi = 1  # one item: always unique
    elems: list[str] = []
    for i, p in enumerate(prefix):
        if hi is not None and i >= hi:
            break
        try:
            elems.append(tr.value(p, f"{path}/{pkw}/{i}", depth + 1))
        except Unsatisfiable:
            break  # no value fits position i: valid arrays stop before it
    rest_rx = None
    if len(elems) == len(prefix) and rest is not False and (hi is None or hi > len(prefix)):
        try:
            rest_rx = tr.value(rest, f"{path}/{rkw}", depth + 1)
        except Unsatisfiable:
            rest_rx = None
    top = len(elems) if rest_rx is None else hi
    if top is not None and lo > top:
        raise Unsatisfiable(f"unsupported: minItems {lo} beyond the items that can validate (at {path})")
    return r"\[" + _sequence(elems, rest_rx, lo, hi, "," + tr.ws) + r"\]"


def _sequence(elems: list[str], rest: str | None, lo: int, hi: int | None, sep: str) -> str:
    """Items elems[0], elems[1], ... then `rest` repeated; length in [lo, hi]; built from the tail in."""
    k = len(elems)
    tail = ""
    if rest is not None:
        more_lo = max(lo - k, 0)
        more_hi = "" if hi is None else str(hi - k)
        tail = f"(?:{sep}{rest}){{{more_lo},{more_hi}}}" if k else ""
        if not k:  # no prefix: the plain repetition, first item without a separator
            body = f"{rest}(?:{sep}{rest}){{{max(lo - 1, 0)},{'' if hi is None else hi - 1}}}"
            return body if lo >= 1 else f"(?:{body})?"
    for i in range(k - 1, -1, -1):
        item = (sep if i else "") + elems[i] + tail
        tail = item if i < lo else f"(?:{item})?"
    return tail


def _finite_domain(tr, items, path: str, depth: int) -> list | None:
    """The distinct values `items` allows when it is an enum/const/boolean/null schema (else None)."""
    items = tr.deref(items, path + "/items", depth + 1)
    if not isinstance(items, dict):
        return None
    if "const" in items:
        vals = [items["const"]]
    elif "enum" in items:
        vals = list(items["enum"])
    elif items.get("type") == "boolean":
        vals = [True, False]
    elif items.get("type") == "null":
        vals = [None]
    else:
        return None
    check = validator_at_root(tr.root, items)
    out, seen = [], set()
    for v in vals:
        key = _canonical(v)
        if key not in seen and check.is_valid(v):
            seen.add(key)
            out.append(v)
    return out if len(out) <= MAX_DOMAIN else None


def _unique_subsequences(dom: list, lo: int, hi: int | None, sep: str, path: str) -> str:
    """Arrays of members in strictly increasing domain order (so duplicate-free), length in [lo, hi]."""
    n = len(dom)
    hi = n if hi is None else min(hi, n)
    if lo > hi:
        raise Unsatisfiable(
            f"unsupported: uniqueItems with minItems {lo} over only {n} distinct values (at {path})"
        )
    if hi == 0:
        return r"\[\]"
    lits = [ra.json_literal(v) for v in dom]
    alts = []
    for i in range(n - max(lo, 1) + 1):  # first member i, the next lo-1 in a row, then any up to hi
        need = max(lo, 1)
        body = lits[i] + "".join(sep + lits[j] for j in range(i + 1, i + need))
        body += "".join(f"(?:{sep}{lits[j]})?" for j in range(i + need, min(n, i + hi)))
        alts.append(body)
    inner = "(?:" + "|".join(alts) + ")"
    return rf"\[{inner}\]" if lo >= 1 else rf"\[{inner}?\]"


def _canonical(v):
    """A hashable key equal for values jsonschema's uniqueItems treats as equal (1 == 1.0, True != 1)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return (type(v).__name__, v)
    if isinstance(v, (int, float)):
        return ("num", Fraction(v))
    if isinstance(v, list):
        return ("list", tuple(_canonical(x) for x in v))
    return ("obj", tuple(sorted((k, _canonical(x)) for k, x in v.items())))



# --- numbers -------------------------------------------------------------------------------------------
def multiple_of(tr, s: dict, kind: str, path: str) -> str:
    """Regex for an integer/number schema with multipleOf (a subset: integers only)."""
    m = s["multipleOf"]
    plain = {k: v for k, v in s.items() if k != "multipleOf"}
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not m > 0 or not math.isfinite(m):
        raise UnsupportedSchema(f"unsupported: multipleOf {m!r} (not a positive number) (at {path})")
    if divides_one(m):
        return tr.numeric(plain, "integer", path)  # every integer is a multiple of m
    lo, hi = integer_bounds(s)
    if float(m).is_integer() and lo is not None and hi is not None:
        step = int(m)
        first = -(-lo // step) * step
        count = 0 if first > hi else (hi - first) // step + 1
        if count == 0:
            raise Unsatisfiable(f"unsupported: multipleOf {m} with no multiple in range (at {path})")
        if count <= MAX_MULTIPLES and max(abs(lo), abs(hi)) < 2**53:
            lits = sorted((str(v) for v in range(first, hi + 1, step)), key=len, reverse=True)
            return "(?:" + "|".join(lits) + ")"
    raise UnsupportedSchema(
        f"unsupported: multipleOf {m} (only 1/K steps, or integer steps on a range of at most "
        f"{MAX_MULTIPLES} multiples) (at {path})"
    )


def divides_one(m: int | float) -> bool:
    """True when 1/m is an integer K and jsonschema's test accepts every integer (see module docstring)."""
    if isinstance(m, int):
        return m == 1
    k = round(1 / m)
    return k >= 1 and abs(Fraction(m) * k - 1) <= Fraction(1, 2**54)


def integer_bounds(s: dict) -> tuple[int | None, int | None]:
    """The integer range minimum/maximum/exclusive* allow (draft-4 boolean exclusives included)."""
    lo, hi = s.get("minimum"), s.get("maximum")
    xlo, xhi = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
    ilo = None if lo is None else math.ceil(lo)
    ihi = None if hi is None else math.floor(hi)
    if xlo is True and lo is not None:
        ilo = math.floor(lo) + 1
    if xhi is True and hi is not None:
        ihi = math.ceil(hi) - 1
    if isinstance(xlo, (int, float)) and not isinstance(xlo, bool):
        ilo = max(math.floor(xlo) + 1, ilo) if ilo is not None else math.floor(xlo) + 1
    if isinstance(xhi, (int, float)) and not isinstance(xhi, bool):
        ihi = min(math.ceil(xhi) - 1, ihi) if ihi is not None else math.ceil(xhi) - 1
    return ilo, ihi
