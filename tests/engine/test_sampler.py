"""Sampler pieces in isolation: commit rule vs a brute-force definition, schedule and stop rule vs the
transformers classes, exact entropy vs torch.distributions, per-row streams."""

from __future__ import annotations

import itertools

import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    LinearTemperatureScheduleLogitsProcessor,
    StableAndConfidentStoppingCriteria,
)

from engine.params import GenerationParams
from engine.sampler import (
    RowKeys,
    RowNoise,
    RowParams,
    accept_mask,
    exact_entropy,
    stop_update,
    temperature_B,
)


def brute_accept(H: list[float], bound: float) -> list[bool]:
    """Position p is kept iff the entropies ranked strictly below it sum to <= bound (distinct values)."""
    return [sum(h for h in H if h < H[p]) <= bound for p in range(len(H))]


def test_accept_mask_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        C = 1 + trial % 9
        H = torch.rand(3, C, generator=g) * (0.01 if trial % 3 == 0 else 0.3)
        bound = [0.05, 0.1, 0.4][trial % 3]
        got = accept_mask(H, torch.full((3,), bound)).tolist()
        assert got == [brute_accept(row, bound) for row in H.tolist()]
        assert all(any(r) for r in got)  # the lowest-entropy position is always kept


def test_accept_mask_per_row_bounds():
    H = torch.tensor([[0.05, 0.05, 0.05, 0.2], [0.05, 0.05, 0.05, 0.2]])
    got = accept_mask(H, torch.tensor([0.06, 0.2]))
    assert got.tolist() == [[True, True, False, False], [True, True, True, True]]


def test_temperature_matches_reference_processor_bitwise():
    for n, (t_max, t_min) in itertools.product([1, 3, 7, 48], [(0.8, 0.4), (1.3, 0.1), (0.9, 0.0)]):
        rp = RowParams.build([GenerationParams(max_denoising_steps=n, t_max=t_max, t_min=t_min)], "cpu")
        proc = LinearTemperatureScheduleLogitsProcessor(t_min=t_min, t_max=t_max, max_denoising_steps=n)
        x = torch.randn(1, 2, 5)
        for cur in range(n, 0, -1):
            ref = proc(None, x.clone(), torch.tensor(cur, dtype=torch.int32))
            mine = x.clone() / temperature_B(torch.tensor([cur], dtype=torch.int32), rp)[:, None, None]
            assert torch.equal(ref, mine), (n, t_max, t_min, cur)


def test_exact_entropy_matches_categorical():
    x = torch.randn(4, 3, 50) * 5
    x[0, 0, :10] = -1e30
    ref = torch.distributions.Categorical(logits=x).entropy()
    assert torch.equal(exact_entropy(x), ref)


def test_stop_rule_matches_reference_criteria():
    g = torch.Generator().manual_seed(1)
    for S in [0, 1, 2, 3]:
        crit = StableAndConfidentStoppingCriteria(stability_threshold=S, confidence_threshold=2.5)
        rp = RowParams.build([GenerationParams(stability_threshold=S, confidence_threshold=2.5)] * 4, "cpu")
        prev = torch.full((4, 3), -1)
        run = torch.zeros(4, dtype=torch.long)
        for _step in range(12):
            am = torch.randint(0, 2, (4, 3), generator=g)  # few values: stable runs happen
            logits = torch.randn(4, 3, 6, generator=g) * 3
            ref = crit(am, logits)
            run, mine = stop_update(am, prev, run, exact_entropy(logits).mean(-1), rp)
            prev = am
            assert torch.equal(ref, mine), S


def test_stop_rule_disabled_rows_never_stop():
    rp = RowParams.build([GenerationParams(stability_threshold=None)], "cpu")
    run, stop = stop_update(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([5]), torch.tensor([0.0]), rp)
    assert not stop.any()


def test_row_noise_is_a_function_of_row_keys_only():
    rn = RowNoise()
    keys = RowKeys(torch.tensor([3, 4, 5]), torch.tensor([0, 1, 0]), torch.tensor([2, 0, 7]))
    a = rn.renoise(keys, 8, 300, torch.device("cpu"))
    b = rn.renoise(keys.select(torch.tensor([2, 0])), 8, 300, torch.device("cpu"))
    assert torch.equal(a[[2, 0]], b)
    assert a.min() >= 0 and a.max() < 300
    assert not torch.equal(a, rn.init_canvas(keys, 8, 300, torch.device("cpu")))
    proc = torch.randn(3, 8, 300)
    keep = torch.rand(3, 8) < 0.5
    s = rn.sample(proc, keep, keys)
    s2 = rn.sample(proc[[2, 0]], keep[[2, 0]], keys.select(torch.tensor([2, 0])))
    assert torch.equal(s[[2, 0]][keep[[2, 0]]], s2[keep[[2, 0]]])
    am, h = rn.stats(proc, keys)
    assert torch.equal(am, proc.argmax(-1))
    assert torch.allclose(h, exact_entropy(proc), atol=1e-4)


def test_params_validation_and_defaults():
    p = GenerationParams.from_defaults(None, eos_token_id=[1, 2], max_new_tokens=None)
    assert p.eos_token_ids == (1, 2) and p.max_new_tokens == 256
    for bad in (
        dict(max_new_tokens=0),
        dict(t_max=0.3, t_min=0.4),
        dict(entropy_bound=0.0),
        dict(stability_threshold=-1),
        dict(t_max=None),
        dict(pad_token_id=-3),
    ):
        try:
            GenerationParams(**bad)
        except ValueError as e:
            assert "GenerationParams." in str(e)
        else:
            raise AssertionError(f"accepted {bad}")
