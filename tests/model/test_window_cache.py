"""model/cache.py's bounded sliding ring: contexts several windows and chunks long (left padding, rows of
different lengths, slot order, slot reuse, chunked encodes, autograd, SlotCache growth, the engine) give what
a cache holding every token gives; contexts that fit the ring are bit-identical to it.

The reference is the same model with the default window_chunk (512: no context here wraps its ring), i.e.
the full-length layout. Tolerances are fp32 rounding of a different key order and chunking; a key missing
from a window, or one too many, moves these values by more than 1e-2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.fast import Engine, Request
from engine.params import GenerationParams
from engine.scheduler import SlotCache, kv_bytes_per_token
from model.cache import WINDOW_CHUNK, KVCache, kv_row_bytes

LOGIT_TOL = 1e-5
KV_TOL = 2e-5  # relative to the largest |K| or |V| of a layer (about 5): noise grows over the layers
# relative, the last layer's hidden states: both paths are within 3e-4 (abs) of a float64 run of this model
HIDDEN_TOL = 1e-4


def _cache(model, B, max_len, chunk=WINDOW_CHUNK):
    return KVCache(model.config, B, max_len, dtype=model.dtype, window_chunk=chunk)


def _left_padded(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    ids = torch.zeros(len(lengths), L, dtype=torch.long)
    valid = torch.zeros(len(lengths), L, dtype=torch.bool)
    for b, n in enumerate(lengths):
        ids[b, L - n :] = torch.randint(3, 512, (n,), generator=g)
        valid[b, L - n :] = True
    return ids, valid


def _assert_same_kv(ring: KVCache, full: KVCache, rows=None, full_rows=None):
    """K/V of every key a pass can still see (sliding: the last W-1 tokens; global: all) at valid indices."""
    W = ring.config.text.sliding_window
    rows = range(ring.batch_size) if rows is None else rows
    full_rows = rows if full_rows is None else full_rows
    assert ring.wraps(int(ring.length_B.max()))  # the test exercises the ring
    for i in range(len(ring.k)):
        for tensors in ((ring.k[i], full.k[i]), (ring.v[i], full.v[i])):
            mine, ref = tensors
            scale = ref.abs().max()
            for r, f in zip(rows, full_rows):
                n = int(ring.length_B[r])
                assert n == int(full.length_B[f])
                j = torch.arange(max(0, n - (W - 1)) if ring.sliding[i] else 0, n)
                j = j[full.valid_BS[f, j]]
                got = mine[r, :, j % ring.layer_slots(i)]
                assert (got - ref[f, :, j]).abs().max() <= KV_TOL * scale, (i, r)


def test_held_positions_of_the_ring(model):
    cache = _cache(model, 1, 100, chunk=5)  # W - 1 + 5 = 12 slots
    assert cache.window_slots == 12 and cache.k[0].shape[2] == 12 and cache.k[1].shape[2] == 100
    pos = cache.held_positions(torch.tensor([0, 3, 12, 13, 30]))
    assert pos[0].tolist() == list(range(-12, 0))
    assert pos[1].tolist() == [0, 1, 2] + list(range(3 - 12, 0))
    assert pos[2].tolist() == list(range(12))
    assert pos[3].tolist() == [12] + list(range(1, 12))
    assert pos[4].tolist() == [24, 25, 26, 27, 28, 29, 18, 19, 20, 21, 22, 23]


@torch.no_grad()
@pytest.mark.parametrize("chunk", [5, 16])
def test_long_left_padded_context_matches_the_full_cache(model, chunk):
    """Prompts of 70, 45 and 58 tokens on a shared padded grid (one encode call: chunked internally), then
    three canvases decoded (with and without self-conditioning) and encoded, through a ring of 12 or 23
    slots: every decoder logit, every visible K/V and the encoder's hidden states match."""
    ids, valid = _left_padded([70, 45, 58])
    B, L = ids.shape
    C = model.config.canvas_length
    ring, full = _cache(model, B, L + 3 * C, chunk), _cache(model, B, L + 3 * C)
    assert ring.window_slots == 7 + chunk and full.window_slots == full.max_len
    pos = torch.arange(L).expand(B, L)
    h_ring = model.encode(ids, ring, positions_BT=pos, valid_BT=valid, return_hidden=True)
    h_full = model.encode(ids, full, positions_BT=pos, valid_BT=valid, return_hidden=True)
    scale = h_full.abs().max()
    assert ((h_ring - h_full).abs().amax(-1) * valid).max() <= HIDDEN_TOL * scale  # pad queries: undefined
    _assert_same_kv(ring, full)
    g = torch.Generator().manual_seed(1)
    for k in range(3):
        p = torch.arange(L + k * C, L + (k + 1) * C).expand(B, C)
        canvas = torch.randint(0, 512, (B, C), generator=g)
        ref = model.decode(canvas, full, positions_BC=p)
        assert (model.decode(canvas, ring, positions_BC=p) - ref).abs().max() <= LOGIT_TOL
        sc = ref * 0.7
        ref = model.decode(canvas, full, positions_BC=p, sc_logits_BCV=sc)
        assert (model.decode(canvas, ring, positions_BC=p, sc_logits_BCV=sc) - ref).abs().max() <= LOGIT_TOL
        committed = ref.argmax(-1)
        h_ring = model.encode(committed, ring, positions_BT=p, len_range=(L + k * C, L + k * C),
                              return_hidden=True)
        h_full = model.encode(committed, full, positions_BT=p, return_hidden=True)
        assert (h_ring - h_full).abs().max() <= HIDDEN_TOL * h_full.abs().max()
        _assert_same_kv(ring, full)
    assert ring.length_B.tolist() == [L + 3 * C] * B


@torch.no_grad()
def test_rows_slot_order_uneven_chunks_and_slot_reuse(model):
    """Per-row positions (each row from index 0), rows written into slots 3, 0, 2 in uneven pieces, some
    wrapped and some not; a decode of a row subset; then slot 0 is reset and reused by a short prompt, and
    decoding it beside a wrapped row shows none of the stale ring."""
    C, chunk = model.config.canvas_length, 6  # ring of 13 slots
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, 512, (n,), generator=g) for n in (40, 11, 29)]
    ring, full = _cache(model, 4, 64, chunk), _cache(model, 3, 64)
    slots = [3, 0, 2]
    for b, p in enumerate(prompts):
        n, a = len(p), 0
        for piece in (3, 20, 9, 100):  # 3 tokens, then pieces larger and smaller than the chunk
            e = min(n, a + piece)
            if e > a:
                model.encode(p[None, a:e], ring, positions_BT=torch.arange(a, e)[None],
                             rows_B=torch.tensor([slots[b]]))
                a = e
        model.encode(p[None], full, positions_BT=torch.arange(n)[None], rows_B=torch.tensor([b]))
    assert ring.length_B.tolist() == [11, 0, 29, 40]
    _assert_same_kv(ring, full, rows=slots, full_rows=[0, 1, 2])
    canvas = torch.randint(0, 512, (3, C), generator=g)
    lens = [len(p) for p in prompts]
    pos = torch.stack([torch.arange(n, n + C) for n in lens])
    ref = model.decode(canvas, full, positions_BC=pos)
    sub = [2, 0]
    out = model.decode(canvas[sub], ring, positions_BC=pos[sub], rows_B=torch.tensor([slots[s] for s in sub]),
                       len_range=(min(lens[s] for s in sub), max(lens[s] for s in sub)))
    assert (out - ref[sub]).abs().max() <= LOGIT_TOL

    # slot reuse: slot 0 (11 tokens, unwrapped) and slot 3 (wrapped) are reset, slot 3 takes a 5-token prompt
    ring.reset(torch.tensor([0, 3]))
    short = torch.randint(3, 512, (5,), generator=g)
    model.encode(short[None], ring, positions_BT=torch.arange(5)[None], rows_B=torch.tensor([3]))
    fresh = _cache(model, 1, 64)
    model.encode(short[None], fresh, positions_BT=torch.arange(5)[None])
    pair = torch.stack([torch.arange(5, 5 + C), torch.arange(29, 29 + C)])
    out = model.decode(canvas[[0, 2]], ring, positions_BC=pair, rows_B=torch.tensor([3, 2]))
    assert ring.wraps(29) and not ring.wraps(5)
    assert (out[0] - model.decode(canvas[:1], fresh, positions_BC=pair[:1])[0]).abs().max() <= LOGIT_TOL
    assert (out[1] - ref[2]).abs().max() <= LOGIT_TOL


@torch.no_grad()
def test_contexts_that_fit_the_ring_are_bit_identical(model):
    """A ring of 7 + 40 = 47 slots and contexts up to 44 tokens: the same keys in the same order as the
    full-length cache, so logits and K/V are equal, not just close."""
    ids, valid = _left_padded([5, 9, 12], seed=3)
    B, L = ids.shape
    C = model.config.canvas_length
    ring, full = _cache(model, B, L + 2 * C + 8, 40), _cache(model, B, L + 2 * C + 8)
    assert ring.window_slots == 47 < ring.max_len
    for c in (ring, full):
        model.encode(ids, c, positions_BT=torch.arange(L).expand(B, L), valid_BT=valid)
    g = torch.Generator().manual_seed(5)
    for k in range(2):
        p = torch.arange(L + k * C, L + (k + 1) * C).expand(B, C)
        canvas = torch.randint(0, 512, (B, C), generator=g)
        out = model.decode(canvas, ring, positions_BC=p)
        assert torch.equal(out, model.decode(canvas, full, positions_BC=p))
        for c in (ring, full):
            model.encode(out.argmax(-1), c, positions_BT=p)
    assert int(ring.length_B.max()) == L + 2 * C <= ring.window_slots
    for i in range(len(ring.k)):
        n = ring.layer_slots(i)
        assert torch.equal(ring.k[i], full.k[i][:, :, :n]) and torch.equal(ring.v[i], full.v[i][:, :, :n])


def test_autograd_through_wrapped_cache_writes(model):
    """Training-style use (encode then decode with grad): gradients flow through the ring's out-of-place
    writes and equal those through the full-length cache."""
    g = torch.Generator().manual_seed(6)
    prompt = torch.randint(3, 512, (2, 40), generator=g)
    C = model.config.canvas_length
    canvas = torch.randint(0, 512, (2, C), generator=g)
    target = torch.randint(0, 512, (2 * C,), generator=g)
    grads = []
    for cache in (_cache(model, 2, 40, chunk=4), _cache(model, 2, 40)):
        model.zero_grad()
        model.encode(prompt, cache, positions_BT=torch.arange(40).expand(2, 40))
        logits = model.decode(canvas, cache, positions_BC=torch.arange(40, 40 + C).expand(2, C))
        F.cross_entropy(logits.reshape(2 * C, -1), target).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    ring, full = grads
    assert set(ring) == set(full) and "embed_tokens.weight" in ring
    assert ring["embed_tokens.weight"][prompt[0, :20]].abs().sum(-1).min() > 0  # early prompt tokens matter
    for n in full:
        assert (ring[n] - full[n]).abs().max() <= 1e-4 * full[n].abs().max() + 1e-7, n
    model.zero_grad()


@torch.no_grad()
def test_slot_cache_budget_and_growth_keep_wrapped_rows(model, monkeypatch):
    """SlotCache counts a fixed ring per row on sliding layers; its growth copies wrapped rings exactly."""
    monkeypatch.setattr(model, "window_chunk", 5)  # ring of 12 slots
    cfg, C = model.config, model.config.canvas_length
    slots = SlotCache(model, max_rows=3, budget_bytes=None, length_step=C)
    t = cfg.text
    glob = sum(2 * t.layer_kv_heads(i) * t.layer_head_dim(i) * 4 for i in range(4) if not t.is_sliding(i))
    assert slots.bytes_for(1, 200) - slots.bytes_for(1, 100) == 100 * glob  # past the ring: global only
    assert slots.bytes_for(1, 10) - slots.per_row_work == 10 * kv_bytes_per_token(cfg, model.dtype)
    assert kv_row_bytes(cfg, model.dtype, 100, 5) < kv_row_bytes(cfg, model.dtype, 100)

    a = slots.try_admit(40)
    assert (slots.cache.max_len, slots.cache.window_slots) == (48, 12)
    p = torch.randint(3, 512, (1, 40), generator=torch.Generator().manual_seed(7))
    model.encode(p, slots.cache, positions_BT=torch.arange(40)[None], rows_B=torch.tensor([a]))
    canvas = torch.randint(0, 512, (1, C), generator=torch.Generator().manual_seed(8))
    pos = torch.arange(40, 40 + C)[None]
    before = model.decode(canvas, slots.cache, positions_BC=pos, rows_B=torch.tensor([a]))
    b = slots.try_admit(90)  # grows rows and length: the wrapped row is copied into the new cache
    assert b != a and slots.cache.max_len == 96 and slots.cache.window_slots == 12
    after = model.decode(canvas, slots.cache, positions_BC=pos, rows_B=torch.tensor([a]))
    assert torch.equal(before, after)


def test_engine_with_a_small_ring_matches_the_full_cache(model, monkeypatch):
    """The fast engine end to end (prefill, canvases, commits, slot reuse, cache growth with wrapped rows)
    through a ring of 11 slots gives the completions of the full-length cache."""
    g = torch.Generator().manual_seed(9)
    p = GenerationParams(max_new_tokens=48, max_denoising_steps=3)
    reqs = [Request(f"r{i}", torch.randint(3, 512, (n,), generator=g).tolist(), 10 + i, p)
            for i, n in enumerate([12, 30, 45, 9])]  # later rows need a longer cache: growth while wrapped

    def run():
        return {c.id: (c.token_ids, c.finish_reason) for c in Engine(model, max_batch_rows=2).run(reqs)}

    full = run()
    monkeypatch.setattr(model, "window_chunk", 4)
    assert run() == full
    assert all(len(v[0]) == 48 for v in full.values())
