"""The fast engine's GPU heads on the CPU (engine/heads.py): materialised logits sampled by the fused Triton
sampler (MaterialisedHead) and the sampler's head mode (FusedHead), with stream keys from the derive_keys
kernel, all run in Triton's interpreter and chosen by the one dispatch switch."""

from __future__ import annotations

import copy

import torch

import kernels
from engine.counters import Counters
from engine.fast import Engine, Request
from engine.heads import ChunkedSweepHead, FusedHead, MaterialisedHead, fast_head
from engine.params import GenerationParams
from engine.sampler import RowNoise

CPU = torch.device("cpu")


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
        assert type(fast_head(RowNoise(), CPU)) is MaterialisedHead
        solo = {r.id: key(Engine(ours, max_batch_rows=1).generate([r])[0]) for r in reqs}
        c = Counters()
        eng = Engine(ours, max_batch_rows=3, counters=c)
        got = {x.id: key(x) for x in eng.run(reqs[::-1])}
    assert got == solo
    assert eng.noise.positions == 0  # the CPU sweep's inverse-CDF sampler never ran
    assert c.steady_syncs == 0 and c.decoder_forwards > 0
    assert all(v[1] in ("eos", "length") for v in got.values())


def test_every_kernel_forced_rows_match_solo_and_the_torch_path(stop_pair, monkeypatch):
    """The whole GPU path (MoE with its routing layout, router, canvas attention reading cache slots in place,
    norms, logit epilogue, self-conditioning softmax, sampler, keys) in the interpreter, fp32: rows in a batch
    of two equal their solo runs, and the decoder's logits match the torch path's."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _, ours = stop_pair
    reqs = [Request(id=f"r{i}", input_ids=list(range(3 + i, 9 + 2 * i)), seed=7 + i,
                    params=GenerationParams(max_new_tokens=8, max_denoising_steps=2)) for i in range(2)]
    key = lambda c: (c.token_ids, c.finish_reason, c.denoising_steps)  # noqa: E731
    with kernels.use_backend("triton"):
        solo = [key(Engine(ours, max_batch_rows=1).generate([r])[0]) for r in reqs]
        both = [key(c) for c in Engine(ours, max_batch_rows=2).generate(reqs[::-1])][::-1]
    assert both == solo and all(s[2] == 2 for s in solo)
    # one decoder forward over cache slots 1, 0 of a 2-slot cache, both backends
    C = ours.config.canvas_length
    cache = ours.new_cache(2, 16 + C)
    ids = torch.arange(3, 19).view(2, 8)
    pos = torch.arange(8).expand(2, 8)
    ours.encode(ids, cache, positions_BT=pos)
    canvas, rows = torch.arange(20, 20 + 2 * C).view(2, C), torch.tensor([1, 0])
    kw = dict(positions_BC=torch.arange(8, 8 + C).expand(2, C), rows_B=rows)
    want = ours.decode(canvas, cache, **kw)
    with kernels.use_backend("triton"):
        got = ours.decode(canvas, cache, **kw)
    assert (got - want).abs().max() < 1e-4


def test_alternative_backends_reach_the_decoder_and_match_the_torch_path(stop_pair, monkeypatch):
    """Per-op overrides to PyTorch's SDPA (canvas attention, reading cache slots 1, 0 of 2 via ctx_rows_B) and
    grouped GEMM (the routed experts) run inside the real decoder and give the torch path's logits (fp32)."""
    _, ours = stop_pair
    calls = []
    for op, name in (("canvas_attention", "sdpa"), ("fused_moe", "grouped")):
        real = kernels._ALTERNATIVES[op][name]
        spy = lambda *a, _real=real, _op=op, **k: calls.append(_op) or _real(*a, **k)  # noqa: E731
        monkeypatch.setitem(kernels._ALTERNATIVES, op, {name: spy})
    C = ours.config.canvas_length
    cache = ours.new_cache(2, 16 + C)
    ours.encode(torch.arange(3, 19).view(2, 8), cache, positions_BT=torch.arange(8).expand(2, 8))
    canvas = torch.arange(20, 20 + 2 * C).view(2, C)
    kw = dict(positions_BC=torch.arange(8, 8 + C).expand(2, C), rows_B=torch.tensor([1, 0]))
    want = ours.decode(canvas, cache, **kw)
    with (kernels.use_backend("sdpa", ops=("canvas_attention",)),
          kernels.use_backend("grouped", ops=("fused_moe",))):
        got = ours.decode(canvas, cache, **kw)
    layers = ours.config.text.num_hidden_layers
    assert calls.count("canvas_attention") == layers and calls.count("fused_moe") == layers
    assert (got - want).abs().max() < 1e-5


def test_head_mode_gives_the_materialised_paths_tokens(stop_pair, monkeypatch):
    """The GPU step samples from the raw LM head output when nothing needs the fp32 logits (the kernels' head
    mode); forcing head_sample to torch turns that off. Both give the same tokens, and the head mode ran."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _, ours = stop_pair
    reqs = [Request(id=f"r{i}", input_ids=list(range(4 + i, 10 + 2 * i)), seed=3 + i,
                    params=GenerationParams(max_new_tokens=8, max_denoising_steps=3)) for i in range(2)]
    key = lambda c: (c.token_ids, c.finish_reason, c.denoising_steps)  # noqa: E731
    calls = []
    real = kernels._OPS["head_sample"]
    spy = lambda *a, **k: calls.append(1) or real[1](*a, **k)  # noqa: E731
    monkeypatch.setitem(kernels._OPS, "head_sample", (real[0], spy, real[2]))
    with kernels.use_backend("triton"):
        assert type(fast_head(RowNoise(), CPU)) is FusedHead
        head = [key(c) for c in Engine(ours, max_batch_rows=2).generate(reqs)]
        ran = len(calls)
        with kernels.use_backend("torch", ops=("head_sample",)):
            assert type(fast_head(RowNoise(), CPU)) is MaterialisedHead
            mat = [key(c) for c in Engine(ours, max_batch_rows=2).generate(reqs)]
    assert ran > 0 and len(calls) == ran  # head mode ran in the first engine only
    assert head == mat


class _Recording:
    """A commit hook that takes the argmax of the logits it is given and keeps a copy of them."""

    def __init__(self):
        self.seen = []

    def initial_state(self):
        return None

    def commit(self, logits_CV, state, *, tokens_left, last_canvas):
        self.seen.append(logits_CV.clone())
        return logits_CV.argmax(dim=-1), state, False


def test_head_mode_commit_hooks_read_the_same_logits(stop_pair, monkeypatch):
    """With commit hooks the head mode keeps the raw LM head output (bf16 here) and the row's temperature and
    processes a row only at commit: the hook gets the fp32 logits of the materialised path, bit for bit,
    including rows frozen early by adaptive stopping and a batch whose rows join at different times."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    ours = copy.deepcopy(stop_pair[1]).to(torch.bfloat16)  # the fixture's model stays fp32

    def run():
        hook = _Recording()
        params = [GenerationParams(max_new_tokens=8, max_denoising_steps=8, confidence_threshold=2.0),
                  GenerationParams(max_new_tokens=16, max_denoising_steps=3)]
        reqs = [Request(id=f"r{i}", input_ids=list(range(5 + i, 11 + 2 * i)), seed=9 + i, params=p,
                        commit_hook=hook) for i, p in enumerate(params)]
        eng = Engine(ours, max_batch_rows=2)
        out = [(c.token_ids, c.canvases, c.denoising_steps) for c in eng.generate(reqs)]
        return out, hook.seen

    with kernels.use_backend("triton"):
        head, seen_head = run()
        with kernels.use_backend("torch", ops=("head_sample",)):
            mat, seen_mat = run()
    assert head == mat and len(seen_head) == len(seen_mat) >= 3
    for a, b in zip(seen_head, seen_mat):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
    assert head[0][2] < 8  # row 0 froze early, and row 1's steps went on beside it


class _Steering(_Recording):
    """A steering hook (engine/commit_hook.py SteeringHook) that records the logits each step shows it."""

    steering_on = True

    def seed_canvas(self, canvas_C, state, *, tokens_left, last_canvas):
        return None

    def steer(self, logits_CV, argmax_C, keep_C, sampled_C, state, *, tokens_left, last_canvas):
        self.seen.append(logits_CV.clone())
        return None


def test_head_mode_steering_sees_the_materialised_logits(stop_pair, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _, ours = stop_pair

    def run():
        hook = _Steering()
        req = Request(id="s", input_ids=[4, 5, 6, 7], seed=2, commit_hook=hook,
                      params=GenerationParams(max_new_tokens=8, max_denoising_steps=2))
        (c,) = Engine(ours, max_batch_rows=1).generate([req])
        return c.token_ids, hook.seen

    with kernels.use_backend("triton"):
        head, seen_head = run()
        with kernels.use_backend("torch", ops=("head_sample",)):
            mat, seen_mat = run()
    assert head == mat and len(seen_head) == len(seen_mat) == 3  # two steps' steering, one commit
    assert all(torch.equal(a, b) for a, b in zip(seen_head, seen_mat))


def test_fast_head_is_chosen_once_by_the_dispatch():
    # the CPU sweep unless the fused sampler runs as a kernel; the head mode when its head form does too
    noise = RowNoise()
    assert type(fast_head(noise, CPU)) is ChunkedSweepHead
    with kernels.use_backend("triton", ops=("fused_sample",)):
        assert type(fast_head(noise, CPU)) is MaterialisedHead
        with kernels.use_backend("triton", ops=("head_sample",)):
            head = fast_head(noise, CPU)
    assert type(head) is FusedHead and head.noise is noise
