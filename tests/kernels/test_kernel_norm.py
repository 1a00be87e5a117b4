"""rms_norm and norm_rope: references vs their definitions, Triton (interpreter) vs references, GPU shapes."""

from __future__ import annotations

import itertools

import pytest
import torch
from kernel_checks import assert_close

import kernels
from kernels.norm_rope import norm_rope_torch, norm_rope_triton, rotate_half_rope
from kernels.rms_norm import (
    rms_norm_pair_torch,
    rms_norm_pair_triton,
    rms_norm_torch,
    rms_norm_triton,
    selfcheck_pair,
)


def _t(*shape, seed=0, dtype=torch.float32, lo=None):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g, dtype=torch.float64)
    if lo is not None:
        t = t.abs() + lo
    return t.to(dtype)


def _definition(x, w, eps, add=None, residual=None, scale=None):
    """Plain float64 math of the whole fused line."""
    x = x.double() + (add.double() if add is not None else 0.0)
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    y = y * (w.double() if w is not None else 1.0)
    y = y + (residual.double() if residual is not None else 0.0)
    return y * (scale.double() if scale is not None else 1.0)


@pytest.mark.parametrize("has_w,has_add,has_res,has_scale", list(itertools.product([False, True], repeat=4)))
def test_rms_norm_reference_and_triton(has_w, has_add, has_res, has_scale):
    N, D = 7, 45  # odd width: the kernel's row block is padded to 64
    x = _t(N, D, seed=1)
    w = _t(D, seed=2, lo=0.2) if has_w else None
    add = _t(N, D, seed=3) if has_add else None
    res = _t(N, D, seed=4) if has_res else None
    scale = torch.tensor([0.6]) if has_scale else None
    want = _definition(x, w, 1e-6, add, res, scale).float()
    ref = rms_norm_torch(x, w, 1e-6, add=add, residual=res, scale=scale)
    assert_close("rms_norm ref", ref, want, 1e-5, 1e-5)
    got = rms_norm_triton(x, w, 1e-6, add=add, residual=res, scale=scale)
    assert_close("rms_norm triton", got, ref, 1e-5, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_tail_with_inner_norms(dtype):
    # (r + norm(norm_1(d) + norm_2(m))) * s: the block tail with its two post-feed-forward norms in one launch
    N, D = 6, 40
    d, m, r = (_t(N, D, seed=i, dtype=dtype) * (3.0 if i == 11 else 1.0) for i in (10, 11, 12))
    w, w1, w2 = (_t(D, seed=i, lo=0.3, dtype=dtype) for i in (13, 14, 15))
    s = torch.tensor([0.7], dtype=dtype)
    ref = rms_norm_torch(d, w, 1e-6, add=m, residual=r, scale=s, norm_x=w1, norm_add=w2)
    d1, m2 = rms_norm_torch(d, w1, 1e-6), rms_norm_torch(m, w2, 1e-6)
    unfused = rms_norm_torch(d1, w, 1e-6, add=m2, residual=r, scale=s)
    assert torch.equal(ref, unfused)  # the reference is the model's old sequence of three calls
    want = _definition(_definition(d, w1, 1e-6), w, 1e-6, _definition(m, w2, 1e-6), r, s)
    tol = 1e-5 if dtype == torch.float32 else 3e-2  # the interpreter truncates bf16 casts
    assert_close("block tail ref", ref, want.float(), tol, tol)
    got = rms_norm_triton(d, w, 1e-6, add=m, residual=r, scale=s, norm_x=w1, norm_add=w2)
    assert_close("block tail triton", got, ref, tol, tol)
    with pytest.raises(ValueError, match="norm_add given without add"):
        rms_norm_triton(d, w, 1e-6, norm_add=w2)
    with pytest.raises(ValueError, match="norm_x"):
        rms_norm_triton(d, w, 1e-6, norm_x=torch.ones(D + 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_pair(dtype):
    x = _t(2, 5, 48, seed=20, dtype=dtype)
    w1, w2 = _t(48, seed=21, lo=0.3, dtype=dtype), _t(48, seed=22, lo=0.3, dtype=dtype)
    ref = rms_norm_pair_torch(x, w1, w2, 1e-6)
    assert torch.equal(ref[0], rms_norm_torch(x, w1, 1e-6))
    assert torch.equal(ref[1], rms_norm_torch(x, w2, 1e-6))
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    for name, a, b in zip(("first", "second"), rms_norm_pair_triton(x, w1, w2, 1e-6), ref):
        assert_close(f"pair {name}", a, b, tol, tol)
    assert selfcheck_pair(torch.device("cpu"))
    with pytest.raises(ValueError, match="weight"):
        rms_norm_pair_triton(x, w1, torch.ones(47), 1e-6)


def test_rms_norm_leading_dims_and_dtype_promotion():
    x = _t(2, 3, 33, seed=5)
    w = _t(33, seed=6, lo=0.5)
    assert_close("3-D", rms_norm_triton(x, w, 1e-6), rms_norm_torch(x, w, 1e-6), 1e-5, 1e-5)
    xb = x.to(torch.bfloat16)
    s = torch.tensor([2.0])  # fp32 one-element scale on bf16 activations promotes, as torch does
    ref = rms_norm_torch(xb, w.to(torch.bfloat16), 1e-6, residual=xb, scale=s)
    got = rms_norm_triton(xb, w.to(torch.bfloat16), 1e-6, residual=xb, scale=s)
    assert got.dtype == ref.dtype == torch.float32
    # the interpreter truncates bf16 casts, so bf16 agrees to bf16 precision only
    assert_close("bf16", got, ref, 3e-2, 3e-2)


def test_rms_norm_bad_args_are_named():
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="weight"):
        rms_norm_triton(x, torch.ones(7), 1e-6)
    with pytest.raises(ValueError, match="residual"):
        rms_norm_triton(x, None, 1e-6, residual=torch.randn(3, 9))
    with pytest.raises(ValueError, match="scale"):
        rms_norm_triton(x, None, 1e-6, scale=torch.ones(2))


def _rope_inputs(B, T, Hh, D, seed=0, dtype=torch.float32, partial=1.0):
    x = _t(B, T, Hh, D, seed=seed, dtype=dtype)
    w = _t(D, seed=seed + 1, lo=0.3, dtype=dtype)
    n_rot = int(partial * D // 2)
    freq = torch.cat([1.0 / (1e4 ** (torch.arange(n_rot, dtype=torch.float64) * 2 / D)),
                      torch.zeros(D // 2 - n_rot, dtype=torch.float64)])
    pos = torch.arange(T, dtype=torch.float64)[None, :].expand(B, T) + 3 * torch.arange(B)[:, None]
    ang = pos[..., None] * freq
    ang = torch.cat([ang, ang], -1)
    return x, w, ang.cos().to(dtype), ang.sin().to(dtype)


def test_norm_rope_reference_matches_definition():
    x, w, cos, sin = _rope_inputs(2, 3, 2, 10)
    y = _definition(x, w, 1e-6)
    half = 5
    c, s = cos[:, :, None].double(), sin[:, :, None].double()
    y1, y2 = y[..., :half], y[..., half:]
    want = torch.cat([y1 * c[..., :half] - y2 * s[..., :half], y2 * c[..., half:] + y1 * s[..., half:]], -1)
    want = want.float()
    assert_close("norm_rope ref", norm_rope_torch(x, w, 1e-6, cos, sin), want, 1e-5, 1e-5)
    # the rotation alone keeps each pair's norm (a rotation), a check independent of the formula above
    r = rotate_half_rope(x, cos, sin)
    pair = lambda t: t[..., :half] ** 2 + t[..., half:] ** 2  # noqa: E731
    assert_close("rotation keeps pair norms", pair(r), pair(x), 1e-5, 1e-5)


@pytest.mark.parametrize("B,T,Hh,D,partial", [(1, 1, 1, 8, 1.0), (2, 5, 3, 22, 1.0), (1, 7, 2, 40, 0.25)])
def test_norm_rope_triton_matches_reference(B, T, Hh, D, partial):
    x, w, cos, sin = _rope_inputs(B, T, Hh, D, seed=D, partial=partial)
    got = norm_rope_triton(x, w, 1e-6, cos, sin)
    assert_close(f"norm_rope D={D}", got, norm_rope_torch(x, w, 1e-6, cos, sin), 1e-5, 1e-5)


def test_norm_rope_strided_input_and_bad_args():
    # the model passes a view of the projection ([B, T, Hh*D] viewed as [B, T, Hh, D]): contiguous there,
    # but a transposed view must work too
    x, w, cos, sin = _rope_inputs(2, 4, 3, 12, seed=9)
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)
    assert not xt.is_contiguous()
    assert_close("strided", norm_rope_triton(xt, w, 1e-6, cos, sin), norm_rope_torch(x, w, 1e-6, cos, sin),
                 1e-5, 1e-5)
    c1, s1 = cos[:1], sin[:1]  # one row of positions shared by the batch broadcasts, as in torch
    assert_close("broadcast cos", norm_rope_triton(x, w, 1e-6, c1, s1), norm_rope_torch(x, w, 1e-6, c1, s1),
                 1e-5, 1e-5)
    with pytest.raises(ValueError, match="cos_BTD"):
        kernels.norm_rope(x, w, 1e-6, cos[:, :3], sin)
    with pytest.raises(ValueError, match="D even"):
        one = torch.ones(1, 2, 5)
        kernels.norm_rope(torch.randn(1, 2, 3, 5), torch.ones(5), 1e-6, one, one)


def test_model_layer_uses_the_fused_ops_and_stays_exact(monkeypatch):
    """Routing the model's norms through kernels.* must not change CPU results: the torch references are the
    model's old op sequence. Forcing "triton" (interpreter) gives the same layer output to fp32 tolerance."""
    from model.config import DiffusionGemmaConfig
    from model.layer import Block
    from model.rope import cos_sin, inv_freq

    cfg = DiffusionGemmaConfig.tiny().text
    torch.manual_seed(0)
    block = Block(cfg, 0).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(0.2 * torch.randn_like(p) + (1.0 if p.dim() == 1 else 0.0))  # Experts start uninitialised
        block.layer_scalar.fill_(0.8)
    B, T = 2, 5
    h = torch.randn(B, T, cfg.hidden_size)
    pos = torch.arange(T)[None].expand(B, T)
    cos, sin = cos_sin(pos, inv_freq(cfg.rope(0), block.self_attn.head_dim), torch.float32)

    def attend(q, k, v):
        G = q.shape[1] // k.shape[1]
        return torch.softmax(q @ k.repeat_interleave(G, 1).transpose(-1, -2), -1) @ v.repeat_interleave(G, 1)

    calls = {"rms_norm": 0, "norm_rope": 0, "rms_norm_pair": 0, "gelu_mul": 0, "route": 0}
    for op in calls:
        ref, tri, mod = kernels._OPS[op]
        def counted(*a, _t=tri, _o=op, **k):
            calls[_o] += 1
            return _t(*a, **k)

        monkeypatch.setitem(kernels._OPS, op, (ref, counted, mod))
    with torch.no_grad():
        want = block(h, cos, sin, attend, encoder=False)
        with kernels.use_backend("triton"):
            got = block(h, cos, sin, attend, encoder=False)
    # input, post-attention, v and the block tail (with its two inner norms); the pre-feed-forward pair
    assert calls == {"rms_norm": 4, "norm_rope": 2, "rms_norm_pair": 1, "gelu_mul": 1, "route": 1}
    assert_close("block", got, want, 1e-4, 1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("D", [256, 512])
def test_gpu_norm_rope_real_shapes(cuda, D):
    x, w, cos, sin = (t.to(cuda) for t in _rope_inputs(2, 256, 16, D, dtype=torch.bfloat16, partial=0.25))
    assert_close(f"norm_rope gpu D={D}", norm_rope_triton(x, w, 1e-6, cos, sin),
                 norm_rope_torch(x, w, 1e-6, cos, sin), 2e-2, 2e-2)


@pytest.mark.gpu
def test_gpu_rms_norm_real_shapes(cuda):
    N, D = 2048, 2816
    x, a, r = (_t(N, D, seed=s, dtype=torch.bfloat16).to(cuda) for s in (1, 2, 3))
    w = _t(D, seed=4, lo=0.2, dtype=torch.bfloat16).to(cuda)
    s = torch.tensor([0.5], dtype=torch.bfloat16, device=cuda)
    assert_close("rms_norm gpu", rms_norm_triton(x, w, 1e-6, add=a, residual=r, scale=s),
                 rms_norm_torch(x, w, 1e-6, add=a, residual=r, scale=s), 2e-2, 2e-2)
