"""patternProperties: extra object keys drawn from each pattern's language, after the declared fields.

jsonschema applies every pattern that re.search-matches a key to its value, and additionalProperties only
to keys that match neither `properties` nor a pattern
(https://json-schema.org/understanding-json-schema/reference/object#patternProperties). Declared keys get
their patterns' schemas through object_keys.key_schema. A generated key comes from one pattern P's language
(string_patterns.py); we cannot tell which other patterns or declared keys it might also match, so its value
satisfies all of them at once: P's schema, every other pattern's (differing) schema, and the schema of every
declared key P matches (re.search on the key itself). A pattern whose combined schema we cannot generate,
or that could produce a dependency's trigger key, supplies no keys (a subset, never a wrong key); nor does
one whose value would blow up the automaton (recursive definitions reached through a pattern, typically).

No pattern keys are generated under maxProperties (the count of optional keys is capped elsewhere) or
propertyNames (keys would also have to satisfy it); additionalProperties never supplies keys here, since a
key outside every pattern cannot be written as a regex without complement.
"""

from __future__ import annotations

from constraints import regex_atoms as ra
from constraints.budget import estimate_states
from constraints.object_keys import conjoin, is_forbidden
from constraints.schema_errors import UnsupportedSchema
from constraints.string_patterns import search_key, string_regex

PAIR_STATES = 2_000  # a pattern whose value's automaton is estimated bigger than this supplies no keys
_NO_EXTRA_KEYS = ("maxProperties", "propertyNames")  # unevaluatedProperties is rewritten (unevaluated.py)


def pattern_pairs(tr, s: dict, props: dict, deps: dict, path: str, depth: int) -> list[str]:
    """Regexes of one `"key": value` pair per pattern that can supply keys (possibly none).

    `tr` is schema_regex.py's _Translator (`value` and `ws` are used); `props` maps every declared or
    required key to its value schema (patterns included).
    """
    pp = s.get("patternProperties", {})
    if not isinstance(pp, dict) or any(k in s for k in _NO_EXTRA_KEYS):
        return []
    triggers = [*deps, *s.get("dependencies", {}), *s.get("dependentSchemas", {})]
    pairs = []
    for pat, sub in pp.items():
        where = f"{path}/patternProperties/{pat.replace('~', '~0').replace('/', '~1')}"
        if any(search_key(pat, k, where) for k in triggers):
            continue  # a generated key could trigger a dependency
        parts = [sub] + [v for q, v in pp.items() if q != pat and v != sub]
        parts += [v for k, v in props.items() if search_key(pat, k, where)]
        schema = conjoin(parts)
        if is_forbidden(schema):
            continue
        try:
            key = string_regex({"pattern": pat}, 0, None, where)
            val = tr.value(schema, where, depth + 1)
        except UnsupportedSchema:  # Unsatisfiable included: this pattern supplies no keys
            continue
        if estimate_states(val) > PAIR_STATES:  # optional extras: not worth a (recursive) blow-up
            continue
        pairs.append(f"{key}:{tr.ws}{val}")
    return pairs


def _pair_and_more(pairs: list[str], sep: str) -> tuple[str, str]:
    pair = pairs[0] if len(pairs) == 1 else "(?:" + "|".join(pairs) + ")"
    return pair, f"(?:{sep}{pair})*"


def pairs_only(pairs: list[str], sep: str) -> str:
    """An object of one or more `pairs` and no declared keys: it has a key, so minProperties 1 holds (a
    declared key could be repeated by a pattern key and not count, hence only without declared keys)."""
    pair, more = _pair_and_more(pairs, sep)
    return rf"\{{{pair}{more}\}}"


def with_extra_pairs(fields: list[tuple[str, bool]], pairs: list[str], sep: str) -> str:
    """ra.object_body(fields) followed by any number of `pairs` (commas only between members)."""
    if not pairs:
        return ra.object_body(fields, sep)
    pair, more = _pair_and_more(pairs, sep)
    if not fields:
        return rf"\{{(?:{pair}{more})?\}}"
    body = ra.object_body(fields, sep)[2:-2]  # without the braces
    if any(r for _, r in fields):
        return rf"\{{{body}{more}\}}"
    # all optional: object_body's body is "(?:alt|alt...)?": either some field first, or a pair first
    return rf"\{{(?:{body[:-1]}{more}|{pair}{more})?\}}"
