"""All-different groups (constraints/all_different.py): the spec refuses what no output can satisfy, the rule
keeps every group all different whenever it reports nothing broken (random groups, logits and pins), it never
dead-ends where every position has fewer peers than values, the exactly-once rule places a value the logits
do not want, the rule alone solves a Sudoku that needs only forced moves, and in both denoising loops the
committed output holds the groups (across canvases) and its pins, with batching that changes nothing."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from constraints.all_different import AllDifferent, AllDifferentSpec, assign
from engine import generate
from engine.fast import Engine, Request
from engine.params import GenerationParams
from engine.pins import FREE, Pins, mask_logits
from sudoku.grid import CANVAS_GROUPS, UNITS, check_solution, parse
from sudoku.puzzles import make_puzzle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from tiny import tiny_pair  # noqa: E402

VALUES = tuple(range(20, 29))  # nine token ids


def _peers(groups: list[list[int]], P: int) -> list[np.ndarray]:
    s: list[set[int]] = [set() for _ in range(P)]
    for g in groups:
        for i in g:
            s[i].update(j for j in g if j != i)
    return [np.array(sorted(x), dtype=np.int64) for x in s]


def _broken_groups(out_P, groups) -> list[int]:
    return [gi for gi, g in enumerate(groups) if len({int(out_P[i]) for i in g}) != len(g)]


@pytest.mark.parametrize("bad, msg", [
    (dict(groups=(), values=VALUES), "groups is empty"),
    (dict(groups=((1, 2),), values=()), "values is empty"),
    (dict(groups=((1, 1),), values=VALUES), "repeats an offset"),
    (dict(groups=((1, -2),), values=VALUES), "offsets must be ints >= 0"),
    (dict(groups=((1, 2),), values=(3, 3)), "repeat a token"),
    (dict(groups=(tuple(range(10)),), values=VALUES), "only 9 values"),
])
def test_the_spec_refuses_what_no_output_satisfies(bad, msg):
    with pytest.raises(ValueError, match=msg):
        AllDifferentSpec(**bad)


def test_pins_that_break_a_group_are_refused_at_construction():
    spec = AllDifferentSpec(((0, 2, 4),), VALUES)
    with pytest.raises(ValueError, match="offsets 0 and 4 hold the same value"):
        AllDifferent(spec, max_new_tokens=8, pins_tokens=(20, FREE, FREE, FREE, 20))
    with pytest.raises(ValueError, match="offset 2 .token 99. is not one of the values"):
        AllDifferent(spec, max_new_tokens=8, pins_tokens=(20, FREE, 99))
    with pytest.raises(ValueError, match="past max_new_tokens=4"):
        AllDifferent(spec, max_new_tokens=4)


def test_the_rule_keeps_groups_all_different_unless_it_says_broken():
    """Sudoku groups, random logits, pins from a real solution (so a completion exists): whenever the rule
    reports no broken position, every group is all different and every pin holds; and it does report some
    dead ends over the trials (the check is not vacuous)."""
    rng = random.Random(0)
    groups = [list(u) for u in UNITS]
    peers = _peers(groups, 81)
    exact = np.zeros((27, 81), dtype=bool)
    for gi, g in enumerate(groups):
        exact[gi, g] = True
    broken_seen = clean_seen = 0
    for trial in range(40):
        puzzle, _ = make_puzzle(rng, target_clues=rng.randint(17, 45))
        fixed = np.array([v - 1 if v else -1 for v in puzzle], dtype=np.int64)
        scale = rng.choice([0.1, 1.0, 5.0])
        logits = np.random.default_rng(trial).normal(0, scale, (81, 9)).astype(np.float32)
        out, broken = assign(logits, peers, fixed, exact if trial % 2 else None)
        assert all(out[i] == fixed[i] for i in range(81) if fixed[i] >= 0)
        if broken == 0:
            clean_seen += 1
            assert _broken_groups(out, groups) == [], trial
        else:
            broken_seen += 1
            assert _broken_groups(out, groups), trial  # a reported dead end is a real violation
    assert clean_seen and broken_seen


def test_no_dead_end_when_every_position_has_fewer_peers_than_values():
    rng = np.random.default_rng(1)
    for trial in range(60):
        P = int(rng.integers(4, 30))
        groups = [sorted(rng.choice(P, size=int(rng.integers(2, 5)), replace=False).tolist())
                  for _ in range(int(rng.integers(1, 8)))]
        peers = _peers(groups, P)
        K = max(len(p) for p in peers) + 1
        logits = rng.normal(0, 3, (P, K)).astype(np.float32)
        logits[rng.random((P, K)) < 0.05] = -np.inf  # a few values masked out (as a pin or a constraint does)
        logits[np.isinf(logits).all(axis=1), 0] = 0.0
        if (np.isfinite(logits).sum(axis=1) < K).any():
            continue  # masked values can make a dead end legitimately; keep the check exact
        out, broken = assign(logits, peers, np.full(P, -1, dtype=np.int64))
        assert broken == 0 and _broken_groups(out, groups) == [], trial


def test_a_value_with_one_place_left_goes_there_against_the_logits():
    """Group of 3 positions, 3 values: position 0 allows only value 0, position 1 only values 0 and 1, and the
    logits prefer value 0 at position 2; value 2 fits nowhere but position 2, so the exactly-once rule puts it
    there (greedy alone would give position 2 value 0, then dead-end)."""
    logits = np.array([[0.0, -np.inf, -np.inf], [5.0, 0.0, -np.inf], [9.0, 0.0, 0.0]], dtype=np.float32)
    peers = _peers([[0, 1, 2]], 3)
    out, broken = assign(logits, peers, np.full(3, -1, dtype=np.int64), np.ones((1, 3), dtype=bool))
    assert out.tolist() == [0, 1, 2] and broken == 0


def test_the_rule_alone_solves_a_sudoku_of_forced_moves():
    puzzle = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
    spec = AllDifferentSpec(CANVAS_GROUPS, VALUES)
    pins = [FREE] * 162
    for i, v in enumerate(parse(puzzle)):
        if v:
            pins[2 * i + 1] = VALUES[v - 1]
    hook = AllDifferent(spec, max_new_tokens=164, pins_tokens=tuple(pins))
    toks, state, _ = hook.commit(mask_logits(torch.zeros(164, 40), pins + [FREE, FREE]), hook.initial_state(),
                                 tokens_left=164, last_canvas=True)
    digits = "".join(str(VALUES.index(int(toks[2 * i + 1])) + 1) for i in range(81))
    assert check_solution(puzzle, digits) is None and state.broken == 0


def test_the_inner_constraint_always_wins(gemma_tok, cfg):
    """A regex over a, b, c for five grouped positions with values a..e: no valid output keeps the group all
    different, so the regex's best valid output is committed and the broken positions are counted; where the
    regex allows every assignment (a..e), the committed output is the assignment, all different."""
    from constraints import build_hook, decode_text

    vals = tuple(gemma_tok.token_to_id(c) for c in "abcde")
    assert None not in vals
    spec = AllDifferentSpec(((0, 1, 2, 3, 4),), vals)
    V = gemma_tok.get_vocab_size()
    for regex, must_break in (("[a-c]{5}", True), ("[a-e]{5}", False)):
        inner = build_hook({"regex": regex}, gemma_tok, [1], max_new_tokens=8, canvas_length=8, config=cfg,
                           pad_token_id=0)
        hook = AllDifferent(spec, max_new_tokens=8, inner=inner)
        for seed in range(6):
            logits = torch.randn(8, V, generator=torch.Generator().manual_seed(seed))
            toks, state, _ = hook.commit(logits, hook.initial_state(), tokens_left=8, last_canvas=True)
            text = decode_text(inner, toks.tolist())
            assert re.fullmatch(regex, text), (regex, text)
            assert (state.broken > 0) == must_break and (len(set(text)) < 5) == must_break, (regex, text)


# -- in the denoising loops (tiny model: canvas 8, three canvases) ---------------------------------------
EOS, PAD = (5, 7), 0
N = 24
# groups over free and pinned positions, across canvases; each position has at most 4 peers (< 9 values)
GROUPS = ((0, 3, 9, 17), (1, 4, 10), (3, 12, 20, 23), (2, 9, 16))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return tiny_pair(tmp_path_factory.mktemp("alldiff"), seed=2)


def _check(tokens: list[int], pins: Pins | None) -> None:
    for g in GROUPS:
        vals = [tokens[o] for o in g]
        assert all(v in VALUES for v in vals) and len(set(vals)) == len(vals), (g, vals)
    for i, t in enumerate(pins.tokens if pins else ()):
        assert t == FREE or tokens[i] == t, i


def test_both_loops_commit_outputs_that_hold_the_groups_and_the_pins(pair):
    _, ours = pair
    spec = AllDifferentSpec(GROUPS, VALUES)
    pins = Pins.at({3: VALUES[4], 12: VALUES[0], 6: 77})
    hook = AllDifferent(spec, max_new_tokens=N, pins_tokens=pins.tokens)
    ids = torch.randint(30, 256, (3, 5), generator=torch.Generator().manual_seed(4))
    for mode in ("reference", "fast"):
        for seed in range(3):
            out = generate(ours, ids, mode=mode, seed=seed, max_new_tokens=N, max_denoising_steps=3,
                           eos_token_id=list(EOS), pad_token_id=PAD, pins=[pins] * 3, commit_hook=hook)
            for b in range(3):
                _check(out[b, 5:].tolist(), pins)


def test_rows_with_and_without_groups_batch_together(pair):
    _, ours = pair
    spec = AllDifferentSpec(GROUPS, VALUES)
    params = GenerationParams(max_new_tokens=N, max_denoising_steps=3, eos_token_ids=EOS, pad_token_id=PAD)
    g = torch.Generator().manual_seed(5)
    reqs = []
    for i in range(6):
        pins = Pins.at({9: VALUES[i]}) if i % 3 == 0 else None
        hook = None if i % 2 == 0 else AllDifferent(spec, max_new_tokens=N,
                                                    pins_tokens=pins.tokens if pins else ())
        reqs.append(Request(id=f"r{i}", input_ids=torch.randint(30, 256, (4 + i,), generator=g).tolist(),
                            seed=70 + i, params=params, pins=pins, commit_hook=hook))
    solo = {r.id: Engine(ours, max_batch_rows=1).generate([r])[0] for r in reqs}
    both = {c.id: c for c in Engine(ours, max_batch_rows=4).run(reqs[::-1])}
    for r in reqs:
        assert both[r.id].token_ids == solo[r.id].token_ids, r.id
        if r.commit_hook is not None:
            _check(solo[r.id].canvas_tokens, r.pins)
            assert solo[r.id].hook_state.broken == 0
