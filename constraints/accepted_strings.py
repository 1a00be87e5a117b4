"""The strings a schema accepts, as automaton operands: what `not: N` excludes from a string (negation.py).

`string_dnf(root, N)` is a union of conjunctions of pattern ASTs (ecma_regex.py), each read on the `may`
side, so it holds every string Python's `re` and jsonschema could accept (a superset: excluding it is
sound). `pattern` is re.search (string_sets.py `search_superset`); minLength/maxLength and string
enum/const values are exact; `anyOf` is the union of its branches, and so is `oneOf` (a string matching
exactly one branch matches at least one: the union is a superset). Keywords that only constrain other kinds
say nothing about strings and are skipped; a checked format (we know only a subset of its language), `not`
and if/then/else inside N are refused by name.
"""

from __future__ import annotations

from constraints import regex_atoms as ra
from constraints.ecma_regex import ANY, Alt, Rep, Seq, literal
from constraints.schema_errors import UnsupportedSchema
from constraints.string_formats import FORMATS
from constraints.string_sets import search_superset, split_conjunction
from constraints.unions import conjuncts, kinds_of

_STRING_KEYS = {"pattern", "minLength", "maxLength", "enum", "const", "format", "anyOf", "oneOf"}
_UNREADABLE = {"not", "if", "$dynamicRef", "$recursiveRef"}  # could hold for strings: unknown


def _literals(values: list[str]):
    seqs = [Seq(tuple(literal(ch) for ch in v)) for v in values]
    return seqs[0] if len(seqs) == 1 else Alt(tuple(seqs))


def string_dnf(root, schema, path: str) -> list[tuple]:
    """The strings `schema` accepts (a superset), as a union of conjunctions of ASTs ([]: none; [()]: all).

    `root` resolves $refs (read only, nothing is translated)."""
    parts = conjuncts(root, schema)
    if parts is None:
        raise UnsupportedSchema(f"unsupported: not (a schema we cannot read as a string set) (at {path})")
    terms: list[tuple] = [()]
    lo, hi = 0, None
    for p in parts:
        if "string" not in kinds_of(root, [{k: v for k, v in p.items() if k not in ("anyOf", "oneOf")}]):
            return []
        bad = _UNREADABLE & set(p)
        if bad:
            raise UnsupportedSchema(f"unsupported: not with {sorted(bad)[0]} inside (at {path})")
        for k in sorted(_STRING_KEYS & set(p)):
            v = p[k]
            if k == "pattern":
                nodes = tuple(search_superset(q, path + "/pattern") for q in split_conjunction(v))
                terms = [x + nodes for x in terms]
            elif k == "minLength":
                lo = max(lo, int(v))
            elif k == "maxLength":
                hi = int(v) if hi is None else min(hi, int(v))
            elif k in ("enum", "const"):
                strings = [x for x in ([v] if k == "const" else v) if isinstance(x, str)]
                terms = [x + (_literals(strings),) for x in terms] if strings else []
            elif k == "format" and (v in FORMATS or v in ra.CHECKED_FORMATS):
                raise UnsupportedSchema(f"unsupported: not with format {v!r} inside (at {path})")
            elif k in ("anyOf", "oneOf"):  # oneOf read as anyOf: a superset
                subs = [y for b in v for y in string_dnf(root, b, f"{path}/{k}")]
                terms = [x + y for x in terms for y in subs]
    if hi is not None and hi < lo:
        return []
    if lo > 0 or hi is not None:
        terms = [x + (Rep(ANY, lo, hi),) for x in terms]
    return terms
