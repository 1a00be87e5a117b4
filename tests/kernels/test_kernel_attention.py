"""canvas_attention: reference vs a per-head definition, Triton (interpreter) vs reference at odd shapes."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import assert_close

from kernels.canvas_attention import canvas_attention_sdpa, canvas_attention_torch, canvas_attention_triton


def _inputs(B, H, K, C, S, D, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    q, kc, vc, kn, vn = mk(B, H, C, D), mk(B, K, S, D), mk(B, K, S, D), mk(B, K, C, D), mk(B, K, C, D)
    vis = torch.rand(B, S, generator=g) > 0.3
    vis[:, :2] = False  # left padding
    if B > 1:
        vis[-1] = False  # a row whose context is fully masked: canvas only
    return q, kc, vc, vis, kn, vn


def _per_head(q, kc, vc, vis, kn, vn, scale):
    B, H, C, D = q.shape
    G = H // kc.shape[1]
    out = torch.empty(B, H, C, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            k = torch.cat([kc[b, h // G][vis[b]], kn[b, h // G]]).double()
            v = torch.cat([vc[b, h // G][vis[b]], vn[b, h // G]]).double()
            out[b, h] = torch.softmax(q[b, h].double() @ k.T * scale, -1) @ v
    return out


def test_reference_matches_definition():
    args = _inputs(2, 4, 2, 5, 9, 8)
    want = _per_head(*args, 0.5).float()
    assert_close("attn ref", canvas_attention_torch(*args, scale=0.5), want, 1e-5, 1e-5)


@pytest.mark.parametrize("B,H,K,C,S,D,blocks", [
    (2, 4, 2, 5, 9, 24, (16, 16, 16)),    # D not a multiple of the D tile; two output-D programs
    (1, 2, 1, 3, 0, 16, (16, 16, 16)),    # no context at all
    (2, 4, 1, 7, 19, 32, (16, 16, 32)),   # G = 4 heads share a KV head; a fully masked context row
])
def test_triton_matches_reference_fp32(B, H, K, C, S, D, blocks):
    args = _inputs(B, H, K, C, S, D, seed=S + D)
    bm, bn, bdv = blocks
    out = canvas_attention_triton(*args, scale=0.3, block_m=bm, block_n=bn, block_dv=bdv)
    assert_close("attn", out, canvas_attention_torch(*args, scale=0.3), 1e-5, 1e-5)


def test_fully_masked_row_is_finite():
    # every key masked cannot happen through the op (canvas keys are always visible), so mask tiles that
    # precede the visible ones: the first key tile is entirely padding, which is where NaNs usually appear
    q, kc, vc, vis, kn, vn = _inputs(1, 2, 1, 2, 20, 16, seed=3)
    vis[:] = False
    vis[0, 18:] = True
    out = canvas_attention_triton(q, kc, vc, vis, kn, vn, block_m=16, block_n=16, block_dv=16)
    assert_close("attn masked", out, canvas_attention_torch(q, kc, vc, vis, kn, vn), 1e-5, 1e-5)



@pytest.mark.parametrize("B,H,K,C,S,D,blocks,splits", [
    (2, 4, 2, 5, 9, 24, (16, 16, 16), 2),   # a split spans the context/canvas boundary; two output-D programs
    (2, 4, 1, 7, 40, 32, (16, 16, 32), 3),  # context-only, boundary and canvas-only splits; fully masked row
    (1, 2, 1, 3, 0, 16, (16, 16, 16), 4),   # no context: capped at one split per key block (one split here)
    (2, 4, 2, 5, 9, 24, (16, 16, 16), 9),   # more splits asked than key blocks
])
def test_split_keys_match_reference(B, H, K, C, S, D, blocks, splits):
    # key ranges merged by their running max and sum give the single-pass result
    args = _inputs(B, H, K, C, S, D, seed=S + D + splits)
    bm, bn, bdv = blocks
    out = canvas_attention_triton(*args, scale=0.3, block_m=bm, block_n=bn, block_dv=bdv, num_splits=splits)
    assert_close("attn split", out, canvas_attention_torch(*args, scale=0.3), 1e-5, 1e-5)


def test_split_keys_masked_first_range_and_context_rows():
    # the first key range is all padding (its max is the -1e30 fill), read through ctx_rows_B in bf16
    q, kc, vc, vis, kn, vn = _inputs(2, 4, 2, 6, 40, 16, seed=5, dtype=torch.bfloat16)
    vis[:, :32] = False
    rows = torch.tensor([1, 0])
    out = canvas_attention_triton(q * 0.25, kc, vc, vis, kn, vn, ctx_rows_B=rows, block_m=16, block_n=16,
                                  block_dv=16, num_splits=3, num_warps=2)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    f = (lambda t: t.float())
    ref = canvas_attention_torch(f(q) * 0.25, f(kc), f(vc), vis, f(kn), f(vn), ctx_rows_B=rows)
    assert_close("attn split masked bf16", out, ref, 2e-2, 2e-2)
    with pytest.raises(ValueError, match="num_splits must be >= 1"):
        canvas_attention_triton(q, kc, vc, vis, kn, vn, num_splits=0)

def test_triton_bf16_inputs():
    args = _inputs(1, 2, 1, 6, 11, 32, seed=7, dtype=torch.bfloat16)
    args = (args[0] * 0.25,) + args[1:]
    out = canvas_attention_triton(*args, block_m=16, block_n=16, block_dv=16)
    assert out.dtype == torch.bfloat16
    ref = canvas_attention_torch(*(a.float() if a.is_floating_point() else a for a in args))
    assert_close("attn bf16", out, ref, 2e-2, 2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("K,D", [(8, 256), (2, 512)])
@pytest.mark.parametrize("impl", [canvas_attention_triton, canvas_attention_sdpa], ids=["triton", "sdpa"])
def test_gpu_real_shapes(cuda, K, D, impl):
    # the Triton kernel, and the SDPA form with whichever fused backend SDPA picks, at the model's shapes
    args = [a.to(cuda) for a in _inputs(2, 16, K, 256, 1024, D, dtype=torch.bfloat16)]
    args[0] = args[0] * D**-0.5
    out = impl(*args)
    ref = canvas_attention_torch(*(a.float() if a.is_floating_point() else a for a in args))
    assert_close(f"attn gpu D={D}", out, ref, 3e-2, 3e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("K,D,splits,warps", [(8, 256, 2, None), (8, 256, 4, None), (8, 256, 1, 4),
                                              (2, 512, 2, None)])
def test_gpu_split_keys_and_warps(cuda, K, D, splits, warps):
    # the sweep's key-split and 4-warp forms at the model's shapes, one canvas (where they fill the card)
    args = [a.to(cuda) for a in _inputs(1, 16, K, 256, 1024, D, dtype=torch.bfloat16)]
    args[0] = args[0] * D**-0.5
    out = canvas_attention_triton(*args, num_splits=splits, num_warps=warps)
    ref = canvas_attention_torch(*(a.float() if a.is_floating_point() else a for a in args))
    assert_close(f"attn gpu split D={D}", out, ref, 3e-2, 3e-2)


def test_context_rows_read_in_place():
    # rows 0..2 of the batch read context slots 4, 0, 2 of a 5-slot cache: same as gathering them first
    g = torch.Generator().manual_seed(7)
    B, H, K, C, S, D, slots = 3, 4, 2, 5, 9, 16, 5
    q = torch.randn(B, H, C, D, generator=g)
    kn, vn = torch.randn(B, K, C, D, generator=g), torch.randn(B, K, C, D, generator=g)
    kc, vc = torch.randn(slots, K, S, D, generator=g), torch.randn(slots, K, S, D, generator=g)
    vis = torch.rand(B, S, generator=g) > 0.3
    rows = torch.tensor([4, 0, 2])
    want = canvas_attention_torch(q, kc[rows], vc[rows], vis, kn, vn)
    assert torch.equal(canvas_attention_torch(q, kc, vc, vis, kn, vn, ctx_rows_B=rows), want)
    got = canvas_attention_triton(q, kc, vc, vis, kn, vn, ctx_rows_B=rows, block_m=16, block_n=16)
    assert_close("attention ctx rows", got, want, 1e-5, 1e-5)
    with pytest.raises(ValueError, match="ctx_rows_B must be"):
        canvas_attention_triton(q, kc, vc, vis, kn, vn, ctx_rows_B=rows[:2])


@pytest.mark.parametrize("B,H,K,C,S,D", [(2, 4, 2, 5, 9, 24), (1, 2, 1, 3, 0, 16), (2, 8, 2, 7, 19, 32)])
def test_sdpa_form_matches_reference(B, H, K, C, S, D):
    # padding, a fully masked context row (canvas keys still visible), G = 2 and 4, no context at all
    args = _inputs(B, H, K, C, S, D, seed=B + S)
    want = canvas_attention_torch(*args, scale=0.3)
    assert_close("attn sdpa", canvas_attention_sdpa(*args, scale=0.3), want, 1e-5, 1e-5)


def test_sdpa_form_context_rows_and_bf16():
    g = torch.Generator().manual_seed(11)
    B, H, K, C, S, D, slots = 3, 4, 2, 5, 9, 16, 5
    mk = lambda *s: torch.randn(*s, generator=g).to(torch.bfloat16)  # noqa: E731
    q, kn, vn = mk(B, H, C, D) * 0.25, mk(B, K, C, D), mk(B, K, C, D)
    kc, vc = mk(slots, K, S, D), mk(slots, K, S, D)
    vis = torch.rand(B, S, generator=g) > 0.3
    rows = torch.tensor([4, 0, 2])
    out = canvas_attention_sdpa(q, kc, vc, vis, kn, vn, ctx_rows_B=rows)
    assert out.dtype == torch.bfloat16 and out.shape == (B, H, C, D)
    ref = canvas_attention_torch(q.float(), kc.float(), vc.float(), vis, kn.float(), vn.float(),
                                 ctx_rows_B=rows)
    assert_close("attn sdpa bf16 rows", out, ref, 2e-2, 2e-2)

