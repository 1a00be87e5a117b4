"""The minimal byte automaton (constraints/byte_automaton.py), the exact token classes of dfa.py, and the
linear all-optional object encoding (regex_atoms.object_body) that keeps big schemas' automata small.

The automaton must keep the regex's language exactly (soundness: minimising never admits a string), be minimal
(no two states with the same future), and stay exact when its hashes collide."""

from __future__ import annotations

import itertools
import json
import time
from collections import deque

import numpy as np
import pytest
from outlines_core import Index, Vocabulary

from constraints import budget, moore
from constraints import byte_automaton as ba
from constraints import regex_atoms as ra
from constraints.dfa import build_token_dfa
from constraints.schema_regex import schema_to_regex, strict_validator
from constraints.walks import byte_walks, decode, dfa_accepts, token_walks

REGEXES = [
    "tr(ue)?|[0-9]+(\\.[0-9]+)?",
    "(ab|cb|db)x?(ab|cb)",  # three branches with one future: merged
    "(é+|true|tr)!",
    '"[a-z]{2,3}"',
    "(a|b)*abb",
    ra.string_pattern(0, 12),
    ra.object_body([(f'"k{i}":{ra.INTEGER}', False) for i in range(5)], ",[ ]?"),
    "[\\x01-\\x03]b|\\x01*c",  # the leading sentinel byte inside the language: read the same
]


def unminimised(regex: str) -> tuple[np.ndarray, np.ndarray]:
    """The reference language: outlines-core's automaton of the regex and the end sentinel alone, read as
    dfa.py read it before minimising (no leading sentinel, no minimisation); (delta [n+1, 256], final [n])."""
    index = Index(f"(?:{regex})\\x00", Vocabulary(256, {bytes([b]): [b] for b in range(256)}))
    trans, init = index.get_transitions(), index.get_initial_state()
    ids = [init] + sorted((set(trans) | {d for m in trans.values() for d in m.values()}) - {init})
    num = {s: i for i, s in enumerate(ids)}
    n = len(ids)
    delta = np.full((n + 1, 256), n, dtype=np.int32)
    for s, m in trans.items():
        for b, d in m.items():
            if b < 256:
                delta[num[s], b] = num[d]
    accept = np.zeros(n + 1, dtype=bool)
    accept[[num[s] for s in index.get_final_states() if s in num]] = True
    final = accept[delta[:n, 0]]
    delta[:n, 0] = n  # the regexes here hold no \x00 of their own
    return delta, final


def same_language(d1, f1, d2, f2) -> bool:
    """Whether two byte automata accept the same strings (breadth-first over the product)."""
    n1, n2 = f1.size, f2.size
    seen = {(0, 0)}
    todo = deque(seen)
    while todo:
        a, b = todo.popleft()
        if (a < n1 and f1[a]) != (b < n2 and f2[b]):
            return False
        for x, y in set(zip(d1[a].tolist(), d2[b].tolist())):
            if (x == n1) != (y == n2):
                return False
            if x < n1 and (x, y) not in seen:
                seen.add((x, y))
                todo.append((x, y))
    return True


def distinguishable_pairs(delta, final) -> np.ndarray:
    """bool [n, n]: states i, j accept different languages (the textbook table-filling fixpoint)."""
    n = final.size
    fin = np.append(final, False)
    diff = fin[:, None] != fin[None, :]
    diff[n, :n] = diff[:n, n] = True  # every live state accepts something, the dead state nothing
    while True:
        new = diff | diff[delta[:, None, :], delta[None, :, :]].any(axis=2)
        if (new == diff).all():
            return diff[:n, :n]
        diff = new


@pytest.mark.parametrize("regex", REGEXES)
def test_minimised_automaton_keeps_the_language_and_is_minimal(regex):
    delta, final = ba.byte_dfa(regex)
    ref_delta, ref_final = unminimised(regex)
    assert same_language(delta, final, ref_delta, ref_final)
    assert final.size <= ref_final.size
    diff = distinguishable_pairs(delta, final)
    assert diff[~np.eye(final.size, dtype=bool)].all()  # no two states share a future


def test_minimising_merges_copies_of_one_future():
    delta, final = ba.byte_dfa("(ab|cb|db)x?(ab|cb)")
    ref_delta, ref_final = unminimised("(ab|cb|db)x?(ab|cb)")
    assert final.size < ref_final.size
    # start -a/c/d-> one state -b-> one state: the three branches' middles are one state
    assert len({int(delta[0, ord(c)]) for c in "acd"}) == 1


def test_hash_collisions_fall_back_to_the_exact_refinement():
    delta, final = unminimised(ra.object_body([('"a":1', False), ('"b":2', False), ('"c":3', False)], ","))
    cols = delta[:, ba._byte_class_reps(delta)]
    zero = np.zeros(cols.shape[1] + 1, dtype=np.uint64)  # every signature collides: nothing splits
    wrong = moore.moore(cols, final, zero)
    assert not moore.is_congruence(cols, final, wrong)
    exact = moore.moore_exact(cols, final)
    assert moore.is_congruence(cols, final, exact)
    w = np.random.default_rng(1).integers(1, 2**63, size=cols.shape[1] + 1, dtype=np.uint64)
    hashed = moore.moore(cols, final, w)
    assert np.unique(hashed).size == np.unique(exact).size  # the hashed refinement finds the same blocks


def test_numbers_build_without_the_unanchored_search():
    """outlines-core also determinises a search from every offset: 2.5 s for this 34-state automaton
    without the leading sentinel byte (2-core box, 2026-12-07)."""
    t0 = time.process_time()
    delta, final = ba.byte_dfa(f"(?:{ra.string_pattern()}|{ra.NUMBER})")
    assert time.process_time() - t0 < 0.5
    assert final.size < 40


def test_an_automaton_with_no_reachable_final_state_is_refused():
    delta = np.full((3, 256), 2, dtype=np.int32)
    delta[0, ord("a")], delta[1, ord("b")] = 1, 0  # a loop that never ends
    with pytest.raises(ValueError, match="matches no string"):
        ba._trim(*ba.minimise(delta, np.zeros(2, dtype=bool)))


# --- the all-optional object encoding ----------------------------------------------------------------------
FIELDS = [(f'"{k}":{v}', False) for k, v in zip("abcd", ["1", "2", "true", '"x"'])]


def test_all_optional_object_accepts_exactly_the_ordered_subsets():
    rx = ra.object_body(FIELDS, ",[ ]?")
    delta, final = ba.byte_dfa(rx)

    def accepts(text: str) -> bool:
        return dfa_accepts(delta, final, text)

    members = [f.replace("\\", "") for f, _ in FIELDS]
    for k in range(len(members) + 1):
        for sub in itertools.combinations(members, k):
            assert accepts("{" + ",".join(sub) + "}") and accepts("{" + ", ".join(sub) + "}"), sub
    for bad in ['{,"a":1}', '{"a":1,}', '{"b":2,"a":1}', '{"a":1,"a":1}', '{"a":1"b":2}', "{ }", '{"a":2}']:
        assert not accepts(bad), bad


def test_all_optional_object_regex_is_linear():
    for n in (4, 16, 64):
        fields = [(f'"k{i}":' + "x" * 50, False) for i in range(n)]
        size = len(ra.object_body(fields, ","))
        assert size <= 2 * sum(len(f) + 8 for f, _ in fields)  # each field written at most twice


def nested_optional(depth: int, width: int) -> dict:
    """Objects of `width` optional properties nested `depth` deep (the Kubernetes shape)."""
    leaf = {"type": "string", "maxLength": 16}
    s = leaf
    for d in range(depth):
        s = {"type": "object", "properties": {f"p{d}_{i}": (s if i % 3 == 0 else leaf) for i in range(width)}}
    return s


@pytest.mark.timeout(60)
def test_nested_optional_objects_compile_small_and_valid(vocab):
    schema = nested_optional(3, 6)  # ~25k estimated states (the first-field encoding: ~117k)
    rx = schema_to_regex(schema)
    assert budget.estimate_states(rx) <= 30_000
    t0 = time.perf_counter()
    dfa = build_token_dfa(rx, vocab, [1])
    assert time.perf_counter() - t0 < 30
    ref = unminimised(rx)[1].size
    assert dfa.n_states < ref / 2  # the copies of each nested value are merged
    v = strict_validator(schema)
    for text in byte_walks(rx, 60, seed=2):
        assert not list(v.iter_errors(json.loads(text))), text
    for toks in token_walks(dfa, vocab, 60, budget=400, seed=2):
        assert not list(v.iter_errors(json.loads(decode(toks, vocab))))
