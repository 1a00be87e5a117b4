"""Our token-level automaton equals outlines-core's own token Index (walked in lockstep)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from outlines_core import Index, Vocabulary

from constraints import byte_automaton, composed_dfa
from constraints.dfa import _column_groups, build_token_dfa
from constraints.schema_regex import schema_to_regex

VOCAB = (
    [None, None, None]
    + [bytes([b]) for b in range(256)]
    + [
        b"ab",
        b'{"',
        b'":',
        b"name",
        b' "',
        b'"}',
        b"12",
        b"\xc3\xa9",
        b"\xc3",
        b'", "',
        b"true",
        b"tr",
        b"a\\",
    ]
)


@pytest.mark.parametrize(
    "regex",
    [
        schema_to_regex(
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 3},
                    "age": {"type": "integer", "minimum": 3, "maximum": 120},
                },
                "required": ["name"],
            }
        ),
        schema_to_regex({"type": "array", "items": {"type": "boolean"}, "maxItems": 3}),
        "(ab|a)c?[0-9]{0,2}",
        "(é+|true|tr)!",
    ],
)
def test_matches_outlines_index(regex):
    assert_matches_outlines_index(regex)


@pytest.mark.parametrize(
    "regex",
    [
        schema_to_regex(
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 3},
                    "tags": {"type": "array", "items": {"enum": ["ab", "tr", 12]}, "maxItems": 2},
                    "n": {"type": "integer", "minimum": -3, "maximum": 120},
                },
            }
        ),
        # ends in '#': outlines-core's token Index (no end sentinel) stops at a final state whose match could
        # go on (after "ab" in `(?:ab|é)+`, say), where ours rightly goes on; such states are not compared
        "(?:(ab|a)c?[0-9]{0,2}|é+!){1,3}#",
    ],
)
def test_matches_outlines_index_when_composed(monkeypatch, regex):
    """The same lockstep check with the byte automaton built part by part (composed_dfa.py), parts tiny."""
    monkeypatch.setattr(byte_automaton, "COMPOSE_CHARS", 0)
    monkeypatch.setattr(composed_dfa, "LEAF_CHARS", 8)
    assert_matches_outlines_index(regex)


def assert_matches_outlines_index(regex: str) -> None:
    ours = build_token_dfa(regex, VOCAB, [1])
    m: dict[bytes, list[int]] = {}
    for i, b in enumerate(VOCAB):
        if b:
            m.setdefault(b, []).append(i)
    ref = Index(regex, Vocabulary(1, m))
    trans = ref.get_transitions()
    finals = ref.get_final_states()
    seen = {(ref.get_initial_state(), 0)}
    todo = deque(seen)
    while todo:
        a, b = todo.popleft()
        ra = {t: s for t, s in trans.get(a, {}).items() if t != 1}
        rb = {t: ours.step(b, t) for t in range(len(VOCAB)) if ours.step(b, t) >= 0}
        assert set(ra) == set(rb), (a, b, sorted(set(ra) ^ set(rb))[:10])
        assert (a in finals) == bool(ours.final[b])
        for t in ra:
            if (ra[t], rb[t]) not in seen:
                seen.add((ra[t], rb[t]))
                todo.append((ra[t], rb[t]))
    assert len({b for _, b in seen}) == ours.n_states  # every state we keep is reachable


def test_column_groups_are_exact():
    """Token classes: same group <=> same next-state column (dfa.py `_column_groups`)."""
    rng = np.random.default_rng(0)
    for Q, V, n in [(7, 400, 3), (50, 300, 40), (1, 10, 2)]:
        base = rng.integers(0, n, size=(Q, V // 4))
        nxt = base[:, rng.integers(0, base.shape[1], size=V)].astype(np.int32)  # many equal columns
        group, first = _column_groups(nxt)
        assert (nxt == nxt[:, first[group]]).all()  # same group -> same column
        assert np.unique(nxt[:, first], axis=1).shape[1] == first.size  # different groups -> different


def test_distances_and_classes():
    d = build_token_dfa('"[a-z]{2,3}"', VOCAB, [1])
    assert (d.token_class[:3] == -1).all()  # the None entries: never allowed, in no class
    assert int(d.dist[0]) == 3  # '"', one of "ab"/two letters..., '"'  -> at best 3 tokens ('"', 'ab', '"')
    assert d.n_classes < len(VOCAB) // 4  # letters share classes


def test_optional_tail_is_reachable_byte_by_byte():
    """Leftmost-first alternation would stop at "tr" in `tr(ue)?`; the end sentinel keeps "true" reachable."""
    d = build_token_dfa("tr(ue)?|[0-9]+(\\.[0-9]+)?", VOCAB, [1])
    for text in ["tr", "true", "12", "12.5"]:
        q = 0
        for byte in text.encode():
            q = d.step(q, 3 + byte)
            assert q >= 0, text
        assert d.final[q], text
    q = d.step(d.step(0, 3 + ord("t")), 3 + ord("r"))
    assert d.final[q] and d.step(q, 3 + ord("u")) >= 0 and not d.final[d.step(q, 3 + ord("u"))]
