"""The fast mode's chunked vocabulary pass (engine/vocab_head.py) and the host-sync-free model passes.

Checks the sweep against the reference op sequence (softcap, temperature, argmax, entropy, the
self-conditioning soft embedding) on odd chunk sizes, argmax ties across chunks, the recomputed rows, the
`len_range` / `sc_soft_BCH` / `return_hidden` model options, and that the fast engine's model passes read
nothing back from the device.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from engine.counters import Counters
from engine.fast import Engine, Request
from engine.params import GenerationParams
from engine.sampler import exact_entropy
from engine.vocab_head import ChunkedHead


class SyncCounter(TorchDispatchMode):
    """Counts device->host reads (.item()/int()/bool() of a tensor)."""

    def __init__(self):
        super().__init__()
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.syncs += 1
        return func(*args, **(kwargs or {}))


def _reference(model, h_NH, T_N):
    """The reference's ops: LM head + softcap (model.logits), divide by T, Categorical entropy."""
    proc = model.logits(h_NH) / T_N[:, None]
    probs = F.softmax(proc.to(model.dtype), dim=-1, dtype=torch.float32).to(model.dtype)
    soft = probs @ model.embed_tokens.weight * model._scale()
    return proc, exact_entropy(proc.double()), soft


@pytest.mark.parametrize("chunk", [7, 64, 256, 1000])
def test_sweep_matches_reference_ops(eos_pair, chunk):
    _, ours = eos_pair
    g = torch.Generator().manual_seed(0)
    N, H = 13, ours.config.text.hidden_size
    h = torch.randn(N, H, generator=g) * 3
    T = 0.4 + torch.rand(N, generator=g)
    proc, ent, soft = _reference(ours, h, T)
    head = ChunkedHead(ours, h, 1.0 / T, chunk=chunk)
    sw = head.sweep(keep_full=True)
    assert torch.equal(sw.argmax_N, proc.argmax(-1))
    assert torch.allclose(sw.full_NV, proc, rtol=1e-5, atol=1e-5)
    assert torch.allclose(sw.max_N, proc.amax(-1), atol=1e-5)
    err = (sw.entropy_N.double() - ent).abs().max().item()
    assert err < 1e-4, f"entropy max error {err}"
    err = (sw.soft_NH - soft).abs().max().item()
    assert err < 1e-4 * soft.abs().max().item(), f"soft embedding max error {err}"
    idx = torch.tensor([12, 0, 5])
    assert torch.allclose(head.rows(idx), proc[idx], rtol=1e-5, atol=1e-5)
    lean = head.sweep(want_soft=False)
    assert lean.soft_NH is None and lean.full_NV is None and torch.equal(lean.argmax_N, sw.argmax_N)


def test_argmax_ties_across_chunks_keep_the_lowest_index():
    V, H = 100, 4
    W = torch.randn(V, H) * 0.1
    W[3] = W[50] = W[97] = torch.tensor([1.0, 0, 0, 0])  # three equal maxima in chunks 0, 3 and 6
    W[60] = torch.tensor([0.9, 0, 0, 0])
    stub = SimpleNamespace(
        embed_tokens=SimpleNamespace(weight=W),
        text=SimpleNamespace(final_logit_softcapping=30.0),
        _scale=lambda: torch.tensor(2.0),
        norm=lambda h: h,
    )
    h = torch.tensor([[5.0, 0, 0, 0], [5.0, 0.1, 0, 0]])
    sw = ChunkedHead(stub, h, torch.ones(2), chunk=16).sweep()
    assert sw.argmax_N.tolist() == [3, 3]


def test_bf16_model_sweep_matches_reference(eos_pair):
    _, ours = eos_pair
    m16 = type(ours)(ours.config)
    m16.load_state_dict(ours.state_dict())
    m16 = m16.to(torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    h = (torch.randn(6, ours.config.text.hidden_size, generator=g) * 3).to(torch.bfloat16)
    T = torch.full((6,), 0.7)
    proc, ent, soft = _reference(m16, h, T)
    sw = ChunkedHead(m16, h, 1.0 / T, chunk=50).sweep()
    assert torch.equal(sw.argmax_N, proc.argmax(-1))
    assert (sw.entropy_N.double() - ent).abs().max().item() < 1e-3
    assert (sw.soft_NH.float() - soft.float()).abs().max().item() < 0.02 * soft.float().abs().max().item()


def test_model_passes_with_len_range_and_soft_embedding(eos_pair):
    """len_range gives the same logits with no device read; a precomputed soft embedding equals passing
    the self-conditioning logits; encode's hidden states drive a real autoregressive decode."""
    _, ours = eos_pair
    g = torch.Generator().manual_seed(2)
    B, P, C = 3, 10, 8
    cache = ours.new_cache(B, P + C)
    ids = torch.randint(3, 256, (B, P), generator=g)
    pos = torch.arange(P).expand(B, P)
    sc = SyncCounter()
    with sc:
        h_enc = ours.encode(ids, cache, positions_BT=pos, len_range=(0, 0), return_hidden=True)
    assert sc.syncs == 0 and h_enc.shape == (B, P, ours.config.text.hidden_size)
    canvas = torch.randint(3, 256, (B, C), generator=g)
    cpos = P + torch.arange(C).expand(B, C)
    sc_logits = torch.randn(B, C, 256, generator=g)
    base = ours.decode(canvas, cache, positions_BC=cpos, sc_logits_BCV=sc_logits)
    probs = F.softmax(sc_logits, dim=-1)
    soft = probs @ ours.embed_tokens.weight * ours._scale()
    with SyncCounter() as sc2:
        h = ours.decode_hidden(canvas, cache, positions_BC=cpos, sc_soft_BCH=soft, len_range=(P, P))
    assert sc2.syncs == 0
    assert torch.allclose(ours.logits(h), base, atol=1e-4)
    # Zero soft embedding == no self-conditioning.
    none = ours.decode(canvas, cache, positions_BC=cpos)
    zero = ours.logits(
        ours.decode_hidden(canvas, cache, positions_BC=cpos, sc_soft_BCH=torch.zeros_like(soft))
    )
    assert torch.equal(none, zero)
    # Incremental encoding reproduces the prefill's last hidden state (the AR baseline's next-token source).
    c2 = ours.new_cache(B, P)
    ours.encode(ids[:, :-1], c2, positions_BT=pos[:, :-1])
    h_last = ours.encode(
        ids[:, -1:], c2, positions_BT=pos[:, -1:], len_range=(P - 1, P - 1), return_hidden=True
    )
    assert torch.allclose(h_last[:, 0], h_enc[:, -1], atol=1e-5)


def test_fast_engine_model_passes_read_nothing_back(eos_pair):
    """No scalar reads anywhere in a fast run (the model's key ranges come from the host); the engine's own
    event reads are `.tolist()` calls, which it counts itself (they bypass the dispatcher)."""
    _, ours = eos_pair
    p = GenerationParams(max_new_tokens=24, max_denoising_steps=4, stability_threshold=None)
    reqs = [Request(f"r{i}", list(range(3, 3 + n)), i, p) for i, n in enumerate([4, 9, 6])]
    c = Counters()
    with SyncCounter() as sc:
        Engine(ours, counters=c).generate(reqs)
    assert sc.syncs == 0 and c.steady_syncs == 0 and c.host_syncs == 3  # one read per canvas event


@pytest.mark.parametrize("chunk", [7, 100, 256])
def test_two_level_inverse_cdf_inverts_the_softmax_cdf(eos_pair, chunk):
    """The chunk-mass + one-chunk inversion returns the token where the fp64 CDF of softmax(x) crosses u
    (away from boundaries: same as one big cumulative sum), for many u per position."""
    _, ours = eos_pair
    g = torch.Generator().manual_seed(3)
    N, H = 5, ours.config.text.hidden_size
    h = torch.randn(N, H, generator=g)
    T = torch.full((N,), 1.3)
    proc, _, _ = _reference(ours, h, T)
    head = ChunkedHead(ours, h, 1.0 / T, chunk=chunk)
    sw = head.sweep(want_soft=False)
    reps = 400
    idx = torch.arange(N).repeat_interleave(reps)
    u = torch.rand(N * reps, generator=g, dtype=torch.float64)
    got = head.inverse_cdf(sw, idx, u)
    cdf = torch.softmax(proc.double(), -1).cumsum(-1)[idx]
    want = torch.searchsorted(cdf, u[:, None], right=True).squeeze(1).clamp(max=255)
    assert (got == want).double().mean().item() > 0.995
    assert head.inverse_cdf(sw, idx[:0], u[:0]).numel() == 0


def test_row_blocks_give_the_same_sweep(eos_pair, monkeypatch):
    import engine.vocab_head as vh

    _, ours = eos_pair
    h = torch.randn(13, ours.config.text.hidden_size, generator=torch.Generator().manual_seed(4))
    inv_t = torch.full((13,), 1.25)
    one = ChunkedHead(ours, h, inv_t, chunk=60).sweep(keep_full=True)
    monkeypatch.setattr(vh, "MAX_ROWS", 4)
    blocks = ChunkedHead(ours, h, inv_t, chunk=60).sweep(keep_full=True)
    for f in vh._FIELDS:
        assert torch.allclose(getattr(one, f), getattr(blocks, f), rtol=1e-6, atol=1e-6), f
