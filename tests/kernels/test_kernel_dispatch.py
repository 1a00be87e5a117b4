"""The dispatch switch: auto is torch on CPU, overrides route to Triton, bad inputs fail with names."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import sampler


def _sample_args():
    logits = torch.randn(2, 70)
    return logits, torch.ones(2), kernels.derive_keys(1, 0, 0, 2)


def test_auto_is_torch_on_cpu():
    logits, it, keys = _sample_args()
    assert kernels.get_backend() == "auto"
    for op in ("fused_sample", "fused_moe", "canvas_attention"):
        assert kernels.backend_for(op, logits) == "torch"


def test_override_routes_to_triton_and_restores(monkeypatch):
    logits, it, keys = _sample_args()
    calls = []
    real = sampler.fused_sample_triton
    monkeypatch.setitem(kernels._OPS, "fused_sample",
                        (sampler.fused_sample_torch, lambda *a: calls.append(1) or real(*a), sampler))
    with kernels.use_backend("triton"):
        assert kernels.backend_for("fused_sample", logits) == "triton"
        out = kernels.fused_sample(logits, it, keys)
    assert calls == [1] and kernels.get_backend() == "auto"
    ref = kernels.fused_sample(logits, it, keys)  # auto on CPU: the reference
    assert all(torch.allclose(a.float(), b.float(), atol=1e-5) for a, b in zip(out, ref))
    with kernels.use_backend("torch"):
        assert kernels.backend_for("fused_moe", logits) == "torch"


def test_gradients_force_torch(monkeypatch):
    x = torch.randn(3, 4, requires_grad=True)
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    assert kernels.backend_for("fused_moe", x) == "torch"


def test_bad_backend_and_bad_inputs():
    with pytest.raises(ValueError, match="backend"):
        kernels.set_backend("cuda")
    logits, it, keys = _sample_args()
    with pytest.raises(ValueError, match="key_N"):
        kernels.fused_sample(logits, it, keys.int())
    with pytest.raises(ValueError, match="down_EHI"):
        kernels.fused_moe(torch.randn(3, 8), torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2),
                          torch.randn(4, 10, 8), torch.randn(4, 8, 4))
    q = torch.randn(1, 3, 2, 4)
    kv = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        kernels.canvas_attention(q, kv, kv, torch.ones(1, 5, dtype=torch.bool), kv[:, :, :2], kv[:, :, :2])
