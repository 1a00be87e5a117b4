"""Behaviour of the encode/decode passes beyond reference parity: slot rows, chunked prefill, per-row
positions, finite fully-masked rows, read-only decode, differentiability, capacity errors, and moe_forward
against a per-token loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.moe import moe_forward

TOL = 1e-5


def _prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 512, (n,), generator=g) for n in lengths]


def _padded(prompts):
    L = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), L, dtype=torch.long)
    valid = torch.zeros(len(prompts), L, dtype=torch.bool)
    for b, p in enumerate(prompts):
        ids[b, L - len(p) :], valid[b, L - len(p) :] = p, True
    return ids, valid


@torch.no_grad()
def test_rows_subset_and_chunked_prefill_match_full_batch(model):
    prompts = _prompts([5, 9, 12])
    ids, valid = _padded(prompts)
    B, L = ids.shape
    C = model.config.canvas_length
    canvas = torch.randint(0, 512, (B, C), generator=torch.Generator().manual_seed(1))
    pos_c = torch.arange(L, L + C).expand(B, C)

    full = model.new_cache(B, 64)
    model.encode(ids, full, positions_BT=torch.arange(L).expand(B, L), valid_BT=valid)
    ref = model.decode(canvas, full, positions_BC=pos_c)

    # same rows, written in a different slot order and in two chunks (5 + 7 tokens, across W=8)
    cache = model.new_cache(4, 64)
    slots = torch.tensor([3, 0, 2])
    for lo, hi in ((0, 5), (5, L)):
        for rows in ([2], [0, 1]):
            r = torch.tensor(rows)
            model.encode(
                ids[r, lo:hi],
                cache,
                positions_BT=torch.arange(lo, hi).expand(len(rows), hi - lo),
                valid_BT=valid[r, lo:hi],
                rows_B=slots[r],
            )
    assert cache.length_B.tolist() == [L, 0, L, L]
    out = model.decode(canvas[[2, 0]], cache, positions_BC=pos_c[:2], rows_B=slots[[2, 0]])
    assert (out - ref[[2, 0]]).abs().max() <= TOL


@torch.no_grad()
def test_per_row_positions_match_padded_grid(model):
    # fast mode: each row stored from index 0 with its own positions 0..n-1 gives the padded row's logits
    prompts = _prompts([5, 12], seed=2)
    ids, valid = _padded(prompts)
    B, L = ids.shape
    C = model.config.canvas_length
    canvas = torch.randint(0, 512, (1, C), generator=torch.Generator().manual_seed(3))
    grid = model.new_cache(B, 64)
    model.encode(ids, grid, positions_BT=torch.arange(L).expand(B, L), valid_BT=valid)
    ref = model.decode(canvas.expand(B, C), grid, positions_BC=torch.arange(L, L + C).expand(B, C))[0]

    own = model.new_cache(1, 64)
    n = len(prompts[0])
    model.encode(prompts[0][None], own, positions_BT=torch.arange(n)[None])
    out = model.decode(canvas, own, positions_BC=torch.arange(n, n + C)[None])[0]
    assert (out - ref).abs().max() <= TOL


@torch.no_grad()
def test_decode_is_read_only_and_masked_rows_stay_finite(model):
    cache = model.new_cache(2, 40)
    ids = torch.randint(3, 512, (2, 10))
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[1] = False  # a row of pads only: every encoder query row is fully masked
    model.encode(ids, cache, positions_BT=torch.arange(10).expand(2, 10), valid_BT=valid)
    assert all(torch.isfinite(k).all() and torch.isfinite(v).all() for k, v in zip(cache.k, cache.v))
    before = [t.clone() for t in cache.k + cache.v] + [cache.valid_BS.clone(), cache.length_B.clone()]
    pos = torch.arange(10, 26).expand(2, 16)
    logits = model.decode(torch.randint(0, 512, (2, 16)), cache, positions_BC=pos)
    after = cache.k + cache.v + [cache.valid_BS, cache.length_B]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert logits.abs().max() <= model.config.text.final_logit_softcapping


def test_capacity_error(model):
    cache = model.new_cache(1, 8)
    with pytest.raises(ValueError, match="cache capacity 8"):
        model.encode(torch.ones(1, 9, dtype=torch.long), cache, positions_BT=torch.arange(9)[None])


def test_encode_decode_are_differentiable(model):
    # gradients reach prompt-only embedding rows, i.e. flow through the cache written by encode
    prompt = torch.arange(3, 15)[None]  # ids 3..14
    canvas = torch.arange(100, 116)[None]
    model.zero_grad()
    cache = model.new_cache(1, 32)
    model.encode(prompt, cache, positions_BT=torch.arange(12)[None])
    sc = torch.randn(1, 16, 512)
    logits = model.decode(canvas, cache, positions_BC=torch.arange(12, 28)[None], sc_logits_BCV=sc)
    F.cross_entropy(logits[0], torch.arange(200, 216)).backward()
    g = model.embed_tokens.weight.grad
    assert g is not None and torch.isfinite(g).all()
    assert g[3:15].abs().sum(-1).min() > 0
    assert model.layers[0].experts.gate_up_proj.grad.abs().sum() > 0
    model.zero_grad()


def test_moe_forward_matches_per_token_loop():
    torch.manual_seed(0)
    T, H, E, Im, k = 7, 12, 5, 6, 2
    x = torch.randn(T, H)
    # experts 2 and 4 get no tokens
    idx = torch.tensor([[0, 1], [1, 0], [3, 1], [0, 3], [1, 3], [3, 0], [0, 1]])
    w = torch.rand(T, k)
    gu, down = torch.randn(E, 2 * Im, H), torch.randn(E, H, Im)
    want = torch.zeros(T, H)
    for t in range(T):
        for j in range(k):
            e = idx[t, j]
            g, u = (gu[e] @ x[t]).chunk(2)
            want[t] += w[t, j] * (down[e] @ (F.gelu(g, approximate="tanh") * u))
    got = moe_forward(x, idx, w, gu, down)
    assert got.shape == (T, H) and (got - want).abs().max() <= 1e-4
