"""The fast engine's GPU path on the CPU: materialised logits sampled by the fused Triton sampler, stream keys
from the derive_keys kernel, both run in Triton's interpreter through the one dispatch switch."""

from __future__ import annotations

import torch

import kernels
from model.counters import Counters
from model.engine import Engine, Request
from model.params import GenerationParams
from model.sampler import RowNoise


def _requests():
    g = torch.Generator().manual_seed(4)
    params = [
        GenerationParams(max_new_tokens=16, max_denoising_steps=3),
        GenerationParams(max_new_tokens=8, max_denoising_steps=4, confidence_threshold=0.5),
        GenerationParams(max_new_tokens=16, max_denoising_steps=2, eos_token_ids=(9,)),
    ]
    return [Request(id=f"r{i}", input_ids=torch.randint(3, 256, (4 + 3 * i,), generator=g).tolist(),
                    seed=50 + i, params=p) for i, p in enumerate(params)]


def test_fused_path_runs_and_rows_are_independent_of_batch(stop_pair, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _, ours = stop_pair
    reqs = _requests()
    key = lambda c: (c.token_ids, c.finish_reason, c.canvases, c.denoising_steps)  # noqa: E731
    with kernels.use_backend("triton", ops=("fused_sample", "derive_keys")):
        assert RowNoise.fused(torch.device("cpu"))
        solo = {r.id: key(Engine(ours, max_batch_rows=1).generate([r])[0]) for r in reqs}
        c = Counters()
        eng = Engine(ours, max_batch_rows=3, counters=c)
        got = {x.id: key(x) for x in eng.run(reqs[::-1])}
    assert got == solo
    assert eng.noise.positions == 0  # the CPU path's inverse-CDF sampler never ran
    assert c.steady_syncs == 0 and c.decoder_forwards > 0
    assert all(v[1] in ("eos", "length") for v in got.values())
