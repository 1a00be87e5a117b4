"""Pinned canvas positions (engine/pins.py): pins never move (random pins and seeds, both loops, across
canvases), rows with and without pins batch together with per-row reproducibility, the two loops sample the
same law at the free positions, a stop token cannot end a row inside its template, bad pins are row errors,
and the commit orders."""

from __future__ import annotations

import random

import pytest
import torch
from tiny import tiny_pair

from engine import generate
from engine.fast import Engine, Request
from engine.params import GenerationParams
from engine.pins import FREE, Pins
from engine.sampler import RowParams, order_mask

EOS, PAD = (5, 7), 0
P = GenerationParams(max_new_tokens=24, max_denoising_steps=4, eos_token_ids=EOS, pad_token_id=PAD)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    # 5 and 7 are frequent argmaxes: EOS lands inside templates unless rule 4 holds it
    return tiny_pair(tmp_path_factory.mktemp("pins"), seed=1, boost={5: 1.5, 7: 1.3})


def _random_pins(rng: random.Random, n: int) -> Pins:
    """Random pins over n offsets; a stop token may only be the last pin (else the row would end there)."""
    offsets = sorted(rng.sample(range(n), rng.randint(1, n - 2)))
    fixed = {o: rng.choice([t for t in range(3, 256) if t not in EOS]) for o in offsets}
    if rng.random() < 0.5:
        fixed[offsets[-1]] = rng.choice(EOS)
    return Pins.at(fixed)


def _holds(tokens: list[int], pins: Pins) -> list[int]:
    """Offsets whose pin the output does not hold."""
    return [i for i, t in enumerate(pins.tokens) if t != FREE and (i >= len(tokens) or tokens[i] != t)]


def test_pins_never_move_in_either_loop(pair):
    _, ours = pair
    rng = random.Random(0)
    for trial in range(6):
        pins = [_random_pins(rng, 20) if b % 3 else None for b in range(6)]
        ids = torch.randint(3, 256, (6, 5), generator=torch.Generator().manual_seed(trial))
        for mode in ("reference", "fast"):
            out = generate(ours, ids, mode=mode, seed=trial, max_new_tokens=24, max_denoising_steps=4,
                           eos_token_id=list(EOS), pad_token_id=PAD, pins=pins)
            for b, p in enumerate(pins):
                if p is not None:
                    assert _holds(out[b, 5:].tolist(), p) == [], (trial, mode, b)


def test_rows_with_and_without_pins_batch_together(pair):
    _, ours = pair
    rng = random.Random(1)
    g = torch.Generator().manual_seed(3)
    reqs = [
        Request(id=f"r{i}", input_ids=torch.randint(3, 256, (4 + i,), generator=g).tolist(), seed=50 + i,
                params=P.with_(max_denoising_steps=3 + i % 3), pins=_random_pins(rng, 24) if i % 2 else None)
        for i in range(8)
    ]
    solo = {r.id: Engine(ours, max_batch_rows=1).generate([r])[0] for r in reqs}
    both = {c.id: c for c in Engine(ours, max_batch_rows=5).run(reqs[::-1])}
    for r in reqs:
        assert both[r.id].canvas_tokens == solo[r.id].canvas_tokens, r.id
        assert both[r.id].token_ids == solo[r.id].token_ids, r.id
        if r.pins is not None:
            assert _holds(solo[r.id].canvas_tokens, r.pins) == []


def test_a_stop_token_cannot_end_a_row_inside_its_template(pair):
    """Pins on canvas 3 of 3: EOS (frequent here) at a free position before the last pin becomes pad, so
    the row reaches its pins; the same rows without pins end early on EOS."""
    _, ours = pair
    ids = torch.randint(3, 256, (8, 5), generator=torch.Generator().manual_seed(9))
    pins = [Pins.at({22: 40, 23: EOS[0]})] * 8
    kw = dict(mode="fast", seed=7, max_new_tokens=24, max_denoising_steps=4, eos_token_id=list(EOS),
              pad_token_id=PAD)
    free = generate(ours, ids, **kw)[:, 5:]
    pinned = generate(ours, ids, pins=pins, **kw)[:, 5:]
    assert any(t in EOS for row in free[:, :22].tolist() for t in row), "the model should emit EOS early"
    for row in pinned.tolist():
        assert row[22:24] == [40, EOS[0]]
        assert not any(t in EOS for t in row[:22])


def test_fast_and_reference_sample_the_same_law_at_free_positions(tmp_path):
    _, ours = tiny_pair(tmp_path, seed=4, vocab_size=32)
    n = 300
    pins = [Pins.at({1: 9, 4: 11, 6: 13})] * n
    ids = torch.tensor([[3, 4, 5, 6, 7]] * n)
    kw = dict(max_new_tokens=8, max_denoising_steps=3, pins=pins)
    free = [0, 2, 3, 5, 7]

    def hist(x):
        return torch.bincount(x[:, 5:][:, free].reshape(-1), minlength=32).double() / (n * len(free))

    ref_x, fast_x = generate(ours, ids, seed=0, **kw), generate(ours, ids, mode="fast", seed=10_000, **kw)
    for x in (ref_x, fast_x):
        assert (x[:, 5:][:, [1, 4, 6]] == torch.tensor([9, 11, 13])).all()
    ref, fast = hist(ref_x), hist(fast_x)
    tv = 0.5 * (ref - fast).abs().sum().item()
    p = (ref + fast) / 2
    null = 0.5 * torch.sqrt(4 * p / (torch.pi * n * len(free))).sum().item()
    assert tv < 1.8 * null, f"TV(reference, fast) = {tv:.3f}, expected about {null:.3f} for one law"


def test_bad_pins_are_row_errors(pair):
    _, ours = pair
    good = Request(id="ok", input_ids=[3, 4, 5], seed=1, params=P, pins=Pins.at({2: 9}))
    late = Request(id="late", input_ids=[3, 4, 5], seed=1, params=P, pins=Pins.at({24: 9}))
    oov = Request(id="oov", input_ids=[3, 4, 5], seed=1, params=P, pins=Pins.at({1: 999}))
    ends = Request(id="ends", input_ids=[3, 4, 5], seed=1, params=P, pins=Pins.at({1: EOS[1], 3: 9}))
    got = {c.id: c for c in Engine(ours, max_batch_rows=4).run([good, late, oov, ends])}
    assert "offset 1 is a stop token" in got["ends"].error
    assert got["ok"].finish_reason != "error" and got["ok"].canvas_tokens[2] == 9
    assert "past max_new_tokens=24" in got["late"].error
    assert "outside the vocabulary" in got["oov"].error
    with pytest.raises(ValueError, match="offset 1"):
        Pins((FREE, -5))


class _Mover:
    """A commit hook that ignores pins (writes token 3 everywhere); records how many tokens position 2 of the
    logits it read allows."""

    def __init__(self):
        self.allowed = []

    def initial_state(self):
        return None

    def commit(self, logits_CV, state, *, tokens_left, last_canvas):
        self.allowed.append(int((logits_CV[2] > float("-inf")).sum()))
        return torch.full((logits_CV.shape[0],), 3), state, False


def test_a_hook_that_moves_a_pin_fails_its_row(pair):
    _, ours = pair
    pinned_hook, free_hook = _Mover(), _Mover()
    req = Request(id="m", input_ids=[3, 4], seed=0, params=P, commit_hook=pinned_hook, pins=Pins.at({2: 9}))
    other = Request(id="o", input_ids=[3, 4], seed=0, params=P, commit_hook=free_hook)
    got = {c.id: c for c in Engine(ours, max_batch_rows=2).run([req, other])}
    assert got["m"].finish_reason == "error" and "pin at canvas position 2" in got["m"].error
    assert got["o"].finish_reason != "error"
    assert pinned_hook.allowed == [1] and free_hook.allowed[0] == 256  # pinned: one allowed token


def test_commit_orders():
    C = 10
    params = [GenerationParams(max_denoising_steps=4, commit_order="left_to_right"), GenerationParams()]
    rp = RowParams.build(params, "cpu")
    conf = torch.zeros(2, C, dtype=torch.bool)
    conf[:, 7] = True
    for steps_left, frontier in ((4, 3), (3, 5), (2, 8), (1, 10)):
        keep = order_mask(conf, rp, torch.tensor([steps_left, 48], dtype=torch.int32))
        assert keep[0].tolist() == [i < frontier for i in range(C)], steps_left
        assert keep[1].tolist() == conf[1].tolist()
    assert order_mask(conf, RowParams.build([GenerationParams()], "cpu"), torch.tensor([3])) is conf
    with pytest.raises(ValueError, match="commit_order"):
        GenerationParams(commit_order="random")
