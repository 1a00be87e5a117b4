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
    for op in ("fused_sample", "fused_moe", "canvas_attention", "rms_norm", "norm_rope"):
        assert kernels.backend_for(op, logits) == "torch"


def test_override_routes_to_triton_and_restores(monkeypatch):
    logits, it, keys = _sample_args()
    calls = []
    real = sampler.fused_sample_triton
    spy = lambda *a, **k: calls.append(1) or real(*a, **k)  # noqa: E731
    monkeypatch.setitem(kernels._OPS, "fused_sample", (sampler.fused_sample_torch, spy, sampler))
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


class _FakeCuda:
    """Stands in for a CUDA tensor in the dispatch rule (no GPU here): device, shape, requires_grad."""

    def __init__(self, *shape: int):
        self.device, self.shape, self.requires_grad = torch.device("cuda"), shape, False


def test_auto_keeps_torch_where_triton_measured_slower(monkeypatch):
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setitem(kernels._selfcheck, ("canvas_attention", "cuda"), True)
    assert kernels.backend_for("canvas_attention", _FakeCuda(1, 16, 256, 256)) == "triton"
    assert kernels.backend_for("canvas_attention", _FakeCuda(4, 16, 256, 256)) == "triton"
    assert kernels.backend_for("canvas_attention", _FakeCuda(8, 16, 256, 256)) == "torch"  # 0.9x measured
    assert kernels.backend_for("canvas_attention", _FakeCuda(1, 16, 256, 512)) == "torch"
    monkeypatch.setitem(kernels._selfcheck, ("fused_moe", "cuda"), True)
    assert kernels.backend_for("fused_moe", _FakeCuda(256, 2816)) == "triton"


def test_derive_keys_follows_the_seed_device():
    # Scalars (canvas, step) must be built where the seeds live: a GPU run once mixed cuda seeds with cpu
    # scalars. The meta device stands in for a non-CPU device here.
    keys = kernels.derive_keys(torch.arange(3, device="meta"), 0, 5, 4)
    assert keys.device.type == "meta" and keys.shape == (12,)
    cpu = kernels.derive_keys(torch.arange(3), torch.zeros(3, dtype=torch.long), 5, 4)
    assert torch.equal(cpu, kernels.derive_keys(torch.arange(3), 0, 5, 4))


def test_per_op_override_leaves_other_ops_alone(monkeypatch):
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setitem(kernels._selfcheck, ("rms_norm", "cuda"), True)
    monkeypatch.setitem(kernels._selfcheck, ("fused_moe", "cuda"), True)
    x = _FakeCuda(256, 2816)
    with kernels.use_backend("torch", ops=("rms_norm",)):
        assert kernels.backend_for("rms_norm", x) == "torch"
        assert kernels.backend_for("fused_moe", x) == "triton"
        with kernels.use_backend("triton"):  # a global override does not beat a per-op one
            assert kernels.backend_for("rms_norm", x) == "torch"
    assert kernels.backend_for("rms_norm", x) == "triton" and kernels._op_backend == {}
    with pytest.raises(ValueError, match="unknown kernel op"):
        kernels.set_backend("torch", ops=("rmsnorm",))


def test_alternatives_only_per_op_and_only_their_own(monkeypatch):
    x = _FakeCuda(8, 16, 256, 256)
    with kernels.use_backend("sdpa", ops=("canvas_attention",)):
        assert kernels.backend_for("canvas_attention", x) == "sdpa"
        assert kernels._impl("canvas_attention", x) is kernels._ALTERNATIVES["canvas_attention"]["sdpa"]
        assert kernels.backend_for("fused_moe", x) == "torch"  # auto, no Triton on this box
    assert kernels._op_backend == {}
    with pytest.raises(ValueError, match="backend must be one of"):
        kernels.set_backend("sdpa")  # not a global choice
    with pytest.raises(ValueError, match=r"backend for fused_moe must be one of .*'grouped'"):
        kernels.set_backend("sdpa", ops=("fused_moe",))
    # auto never picks an alternative by itself
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setitem(kernels._selfcheck, ("canvas_attention", "cuda"), True)
    assert kernels.backend_for("canvas_attention", x) in ("torch", "triton")


def test_tuned_settings_pick_by_size_and_reach_the_launcher(monkeypatch):
    # measured launch settings: the entry with the largest size not above the call's (else the smallest),
    # matched on the head dim for attention; passed to the Triton launcher only, restored afterwards
    settings = {"fused_moe": [((256,), {"block_m": 32}),
                              ((2048,), {"block_m": 128, "down_tile": (128, 64, 4, 4)})],
                "canvas_attention": [((256, 1), {"num_splits": 2}), ((512, 1), {"num_splits": 2}),
                                     ((512, 8), {"prefer_triton": True})],
                "head_sample": [((256,), {"chunks": 8})]}
    with kernels.use_tuned(settings):
        assert kernels.tuned_for("fused_moe", _FakeCuda(16, 64)) == {"block_m": 32}  # below every size
        assert kernels.tuned_for("fused_moe", _FakeCuda(1024, 64)) == {"block_m": 32}
        assert kernels.tuned_for("fused_moe", _FakeCuda(4096, 64))["block_m"] == 128
        assert kernels.tuned_for("canvas_attention", _FakeCuda(4, 16, 256, 256)) == {"num_splits": 2}
        assert kernels.tuned_for("canvas_attention", _FakeCuda(4, 16, 256, 128)) == {}  # no head dim 128
        assert kernels.tuned_for("fused_sample", _FakeCuda(256, 70)) == {}
        # prefer_triton lifts measured_slower at that size only
        monkeypatch.setattr(kernels, "HAS_TRITON", True)
        monkeypatch.setitem(kernels._selfcheck, ("canvas_attention", "cuda"), True)
        assert kernels.backend_for("canvas_attention", _FakeCuda(8, 16, 256, 512)) == "triton"
        assert kernels.backend_for("canvas_attention", _FakeCuda(16, 16, 256, 512)) == "triton"
        assert kernels.backend_for("canvas_attention", _FakeCuda(1, 16, 256, 512)) == "torch"
        # the launcher gets the kwargs (the torch reference never does)
        calls = []
        monkeypatch.setitem(kernels._OPS, "head_sample", (sampler.head_sample_torch,
                                                          lambda *a, **k: calls.append(k), sampler))
        x = torch.randn(256, 40)
        keys = kernels.derive_keys(torch.arange(2), 0, 0, 128)
        with kernels.use_backend("triton"):
            kernels.head_sample(x, 30.0, None, keys)
        assert calls == [{"sample_only": False, "chunks": 8}]
        kernels.head_sample(x, 30.0, None, keys)  # auto on CPU: the reference, no extra kwargs
        assert len(calls) == 1
    assert kernels._tuned == {} and kernels.tuned_for("fused_moe", _FakeCuda(256, 64)) == {}
    with pytest.raises(ValueError, match="block_q.. are not keyword arguments of canvas_attention_triton"):
        kernels.set_tuned({"canvas_attention": [((256, 1), {"block_q": 32})]})
    with pytest.raises(ValueError, match="must have 2 parts"):
        kernels.set_tuned({"canvas_attention": [((256,), {"num_splits": 2})]})
    with pytest.raises(ValueError, match="tunable ops"):
        kernels.set_tuned({"rms_norm": [((8,), {})]})
    assert kernels._tuned == {}
