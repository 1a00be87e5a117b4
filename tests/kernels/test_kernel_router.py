"""route (the MoE router): the reference is the model's op sequence; Triton (interpreter) vs it."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import assert_close

import kernels
from kernels.router import route_torch, route_triton, selfcheck


def _inputs(T, H, E, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(T, H, generator=g)
    scale, pes = torch.rand(H, generator=g) + 0.5, torch.rand(E, generator=g) + 0.5
    proj = torch.randn(E, H, generator=g)
    return tuple(t.to(dtype) for t in (r, scale, proj, pes))


def test_reference_is_the_model_op_sequence():
    r, scale, proj, pes = _inputs(9, 32, 6)
    idx, w = route_torch(r, scale, proj, pes, 3, 1e-6)
    z = r * torch.pow(r.pow(2).mean(-1, keepdim=True) + 1e-6, -0.5) * scale * 32**-0.5
    p = torch.softmax(z @ proj.t(), -1)
    top, want_idx = p.topk(3, dim=-1)
    assert torch.equal(idx, want_idx) and idx.dtype == torch.long and w.dtype == torch.float32
    assert_close("weights", w, top / top.sum(-1, keepdim=True) * pes[want_idx], 1e-6, 1e-6)


@pytest.mark.parametrize("T,H,E,k", [(1, 64, 8, 2), (37, 96, 24, 5), (100, 64, 128, 8)])
def test_triton_matches_reference_fp32(T, H, E, k):
    # fp32 random logits have no ties, so the experts must agree exactly and in the same (descending) order
    args = _inputs(T, H, E, seed=T)
    i_ref, w_ref = route_torch(*args, k, 1e-6)
    i_got, w_got = route_triton(*args, k, 1e-6)
    assert torch.equal(i_got, i_ref)
    assert_close("router weights", w_got, w_ref, 1e-6, 1e-5)


def test_ties_go_to_the_lower_expert_and_dispatch():
    r, scale, proj, pes = _inputs(4, 16, 6)
    proj[3] = proj[1]  # experts 1 and 3 always tie
    idx, _ = route_triton(r, scale, proj, pes, 6, 1e-6)
    pos = {e: (idx == e).nonzero()[:, 1] for e in (1, 3)}
    assert (pos[1] < pos[3]).all()
    assert selfcheck(torch.device("cpu"))
    want = route_torch(r, scale, proj, pes, 2, 1e-6)
    got = kernels.route(r, scale, proj, pes, 2, 1e-6)  # auto on CPU: the reference, exactly
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.gpu
def test_gpu_real_shapes(cuda):
    r, scale, proj, pes = (t.to(cuda) for t in _inputs(2048, 2816, 128, dtype=torch.bfloat16))
    i_ref, w_ref = route_torch(r, scale, proj, pes, 8, 1e-6)
    i_got, w_got = route_triton(r, scale, proj, pes, 8, 1e-6)
    # bf16 logits can tie; the experts chosen must agree almost everywhere, the weights where they agree
    same = (i_got == i_ref).all(dim=1)
    assert same.float().mean() > 0.95
    assert_close("router weights gpu", w_got[same], w_ref[same], 1e-3, 1e-2)
