"""quant_linear and quant_moe: references vs float64 definitions from `dequantize`, Triton (interpreter) vs
references at tiny odd shapes per scheme, the kernels' in-register dequantization bit-equal to `dequantize`,
and (gpu-marked) Triton vs torch at the real expert shapes.

The QuantTensors are made here by round-to-nearest quantization of random weights into kernels/dequant.py's
layout (simple code, independent of the kernels)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from kernel_checks import assert_close

import kernels
from kernels.dequant import E2M1_VALUES, FP8_MAX, QuantTensor, dequantize
from kernels.quant_linear import block_k_for, group_mode, quant_linear_torch, quant_linear_triton
from kernels.quant_linear import selfcheck as linear_selfcheck
from kernels.quant_moe import quant_moe_torch, quant_moe_triton
from kernels.quant_moe import selfcheck as moe_selfcheck

# the module (kernels/__init__.py's `quant_moe` function shadows the attribute of that name)
QMOE = importlib.import_module("kernels.quant_moe")


# ---- round-to-nearest quantizers into the layout table of kernels/dequant.py ------------------------------
def _pack_nibbles(nib: torch.Tensor, per: int, dtype: torch.dtype) -> torch.Tensor:
    """[..., K] values 0..15 -> [..., ceil(K/per)] with column c at bits 4 * (c % per) of element c // per."""
    K = nib.shape[-1]
    nib = torch.nn.functional.pad(nib.long(), (0, -K % per)).unflatten(-1, (-1, per))
    word = (nib << (4 * torch.arange(per, device=nib.device))).sum(-1)
    if dtype == torch.int32:  # two's complement of the 32-bit pattern
        word = torch.where(word >= 2**31, word - 2**32, word)
    return word.to(dtype)


def _groups(w: torch.Tensor, G: int) -> torch.Tensor:
    """[..., K] -> [..., ceil(K/G), G], the partial last group padded with zeros."""
    return torch.nn.functional.pad(w, (0, -w.shape[-1] % G)).unflatten(-1, (-1, G))


def quant_fp8(w: torch.Tensor, per_tensor: bool = False, scale_dtype=torch.float32) -> QuantTensor:
    amax = w.abs().amax(-1)
    if per_tensor:  # one scale repeated on every row
        amax = torch.full_like(amax, w.abs().max().item())
    scale = (amax.clamp(min=1e-8) / FP8_MAX).to(scale_dtype)
    data = (w / scale.float().unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return QuantTensor("fp8", data, scale, w.shape[-1], w.shape[-1])


def quant_w4a16(w: torch.Tensor, G: int, asym: bool = False, scale_dtype=torch.bfloat16) -> QuantTensor:
    K = w.shape[-1]
    g = _groups(w, G)
    if asym:  # w = (q - zero) * scale with q in [-8, 7]: the range [min, max] maps onto 16 levels
        lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
        scale = ((hi - lo) / 15).clamp(min=1e-8).to(scale_dtype)
        zero = (-8 - torch.round(lo / scale.float())).clamp(-128, 127).to(torch.int8)
    else:
        scale = (g.abs().amax(-1) / 7).clamp(min=1e-8).to(scale_dtype)
        zero = torch.zeros(scale.shape, dtype=torch.int8, device=w.device)
    q = torch.round(g / scale.float().unsqueeze(-1)) + zero.float().unsqueeze(-1)
    q = q.clamp(-8, 7).flatten(-2)[..., :K]
    return QuantTensor("w4a16", _pack_nibbles(q + 8, 8, torch.int32), scale, K, G,
                       zero=zero if asym else None)


def quant_nvfp4(w: torch.Tensor) -> QuantTensor:
    K = w.shape[-1]
    gs = (FP8_MAX * 6.0 / w.abs().amax(-1).clamp(min=1e-8)).float()  # per row: the largest group scale is 448
    g = _groups(w, 16)
    scale = (g.abs().amax(-1) / 6.0 * gs.unsqueeze(-1)).clamp(max=FP8_MAX).to(torch.float8_e4m3fn)
    step = (scale.float() / gs.unsqueeze(-1)).unsqueeze(-1)
    v = torch.where(step > 0, g / step.clamp(min=1e-30), torch.zeros_like(g)).flatten(-2)[..., :K]
    mags = torch.tensor(E2M1_VALUES, device=w.device)
    idx = torch.bucketize(v.abs(), (mags[1:] + mags[:-1]) / 2)  # the nearest e2m1 magnitude
    code = idx + 8 * (v < 0)
    return QuantTensor("nvfp4", _pack_nibbles(code, 2, torch.uint8), scale, K, 16, global_scale=gs)


def quantize(scheme: str, w: torch.Tensor) -> QuantTensor:
    """scheme names used by the tests: 'fp8', 'fp8 per-tensor', 'fp8 bf16 scale', 'w4a16 G=32',
    'w4a16 asym G=32', 'w4a16 G=16 fp16 scale', 'w4a16 G=24' (a group no BK fits), 'nvfp4'."""
    name, *opts = scheme.split()
    G = next((int(o[2:]) for o in opts if o.startswith("G=")), 32)
    if name == "fp8":
        return quant_fp8(w, "per-tensor" in opts, torch.bfloat16 if "bf16" in opts else torch.float32)
    if name == "w4a16":
        return quant_w4a16(w, G, "asym" in opts, torch.float16 if "fp16" in opts else torch.bfloat16)
    return quant_nvfp4(w)


def _weight(N: int, K: int, lead=(), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, N, K, generator=g) / math.sqrt(K)


SCHEMES = ["fp8", "fp8 per-tensor", "fp8 bf16 scale", "w4a16 G=32", "w4a16 asym G=32",
           "w4a16 G=16 fp16 scale", "w4a16 G=24", "nvfp4"]
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (3e-3, 3e-3)}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantizers_round_trip(scheme):
    # the test's own packing agrees with dequantize: quantization error only (4-bit: about a level)
    w = _weight(9, 72)
    q = quantize(scheme, w)
    err = (dequantize(q, torch.float32) - w).abs().max().item()
    assert err <= (0.05 if scheme.startswith("fp8") else 0.35) * w.abs().max().item(), (scheme, err)


# ---- quant_linear ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
def test_linear_reference_matches_definition(scheme):
    w = quantize(scheme, _weight(11, 40))
    x = torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(1))
    W = dequantize(w, torch.float64)
    want = torch.stack([torch.stack([W[n] @ x[i, j].double() for n in range(11)]) for i in range(2)
                        for j in range(3)]).view(2, 3, 11)
    assert_close(f"linear ref {scheme}", quant_linear_torch(x, w), want.float(), 1e-5, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("scheme,N,K", [(s, 37, 72) for s in SCHEMES] + [
    ("w4a16 G=32", 19, 40), ("w4a16 asym G=32", 19, 40),  # K = 40: a partial last group of 8
    ("nvfp4", 21, 24),  # K = 24: groups of 16 and 8; 12 bytes a row, read as int32 words
    ("nvfp4", 21, 36),  # 18 bytes a row: read byte by byte
])
def test_linear_triton_matches_reference(scheme, N, K, dtype):
    w = quantize(scheme, _weight(N, K, seed=N))
    x = torch.randn(3, 5, K, generator=torch.Generator().manual_seed(K)).to(dtype)
    out = quant_linear_triton(x, w, block_m=16, block_n=16)
    assert out.dtype == dtype and out.shape == (3, 5, N)
    atol, rtol = TOL[dtype]
    ref = quant_linear_torch(x.float(), w)
    assert_close(f"linear {scheme} {dtype}", out, ref, atol * ref.abs().max().item(), rtol)


@pytest.mark.parametrize("scheme", ["fp8", "w4a16 asym G=32", "nvfp4"])
def test_linear_single_row(scheme):
    # M = 1, and x with no leading dims at all
    w = quantize(scheme, _weight(30, 56, seed=3))
    x = torch.randn(56, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    out = quant_linear_triton(x, w)
    assert out.shape == (30,)
    ref = quant_linear_torch(x.float(), w)
    assert_close(f"linear M=1 {scheme}", out, ref, 2e-2 * ref.abs().max().item(), 2e-2)
    assert_close(f"linear M=1 rows {scheme}", quant_linear_triton(x[None], w)[0], out, 0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_triton_dequantizes_exactly(scheme, dtype):
    # x = I gives y = w^T: every kernel weight value must be dequantize()'s bit for bit (the rounding rule),
    # for every way the kernel reads group scales (BK 16 / 32 / 64 against G = 16, 24, 32, K)
    K = 72
    w = quantize(scheme, _weight(24, K, seed=5))
    want = dequantize(w, dtype).t()
    modes = set()
    for bk in (16, 32, 64):
        got = quant_linear_triton(torch.eye(K, dtype=dtype), w, block_m=16, block_n=16, block_k=bk)
        assert torch.equal(got, want), f"{scheme} {dtype} BK={bk}: {(got.float() - want.float()).abs().max()}"
        modes.add(group_mode(w, block_k_for(w, bk)))
    if scheme == "w4a16 G=24":
        assert modes == {2}
    elif scheme == "w4a16 G=32":
        assert modes == {0, 1}


def test_linear_rejects_bad_arguments():
    w = quantize("fp8", _weight(8, 16))
    with pytest.raises(ValueError, match="must end in w's K = 16"):
        kernels.quant_linear(torch.randn(3, 15), w)
    with pytest.raises(ValueError, match="2-D QuantTensor"):
        kernels.quant_linear(torch.randn(3, 16), quantize("fp8", _weight(8, 16, lead=(2,))))
    with pytest.raises(ValueError, match="float32/bfloat16/float16"):
        kernels.quant_linear(torch.ones(3, 16, dtype=torch.int32), w)


# ---- quant_moe ---------------------------------------------------------------------------------------------
def _moe_inputs(T, H, E, k, I, scheme, seed=0, dtype=torch.float32):  # noqa: E741
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(dtype)
    gu = quantize(scheme, _weight(2 * I, H, lead=(E,), seed=seed + 1))
    dn = quantize(scheme, _weight(H, I, lead=(E,), seed=seed + 2))
    idx = torch.stack([torch.randperm(E - 1, generator=g)[:k] for _ in range(T)])  # expert E-1: no token
    w = torch.rand(T, k, generator=g)
    return x, idx, w, gu, dn


def _moe_per_token(x, idx, w, gu, dn):
    GU, DN = dequantize(gu, torch.float64), dequantize(dn, torch.float64)
    I = DN.shape[2]  # noqa: E741
    out = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            h = GU[idx[t, j]] @ x[t].double()
            act = torch.nn.functional.gelu(h[:I], approximate="tanh") * h[I:]
            out[t] += w[t, j].double() * (DN[idx[t, j]] @ act)
    return out


@pytest.mark.parametrize("scheme", ["fp8", "w4a16 asym G=32", "nvfp4"])
def test_moe_reference_matches_definition(scheme):
    x, idx, w, gu, dn = _moe_inputs(9, 40, 5, 3, 24, scheme)
    want = _moe_per_token(x, idx, w, gu, dn).float()
    assert_close(f"moe ref {scheme}", quant_moe_torch(x, idx, w, gu, dn), want, 1e-5, 1e-5)


def test_moe_reference_dequantizes_one_used_expert_at_a_time(monkeypatch):
    x, idx, w, gu, dn = _moe_inputs(6, 40, 5, 2, 24, "w4a16 G=32")
    seen = []
    real = QMOE.dequantize

    def recording(q, dtype):
        seen.append(tuple(q.shape))
        return real(q, dtype)

    monkeypatch.setattr(QMOE, "dequantize", recording)
    quant_moe_torch(x, idx, w, gu, dn)
    used = len(set(idx.flatten().tolist()))
    assert used < 5 and sorted(seen) == sorted([(48, 40)] * used + [(40, 24)] * used)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("T", [1, 23])
def test_moe_triton_matches_reference_fp32(scheme, T):
    # H = 40 with G = 32 or 16: partial last groups in gate_up; I = 24: partial in down; expert 4 idle
    x, idx, w, gu, dn = _moe_inputs(T, 40, 5, 2, 24, scheme, seed=T)
    out = quant_moe_triton(x, idx, w, gu, dn, block_n=16, block_k=32)
    assert_close(f"moe {scheme} T={T}", out, quant_moe_torch(x, idx, w, gu, dn), 1e-5, 1e-5)


@pytest.mark.parametrize("scheme", ["fp8", "w4a16 asym G=32", "nvfp4"])
def test_moe_triton_bf16(scheme):
    x, idx, w, gu, dn = _moe_inputs(20, 48, 4, 2, 16, scheme, seed=5, dtype=torch.bfloat16)
    out = quant_moe_triton(x, idx, w, gu, dn, block_n=16)
    assert out.dtype == torch.bfloat16
    ref = quant_moe_torch(x.float(), idx, w, gu, dn)
    # the kernel keeps gate/up in fp32 and rounds h and each expert output to bf16 once
    assert_close(f"moe bf16 {scheme}", out, ref, 2e-2 * ref.abs().max().item(), 2e-2)


def test_moe_rejects_bad_arguments():
    x, idx, w, gu, dn = _moe_inputs(4, 40, 3, 2, 24, "fp8")
    with pytest.raises(ValueError, match="do not fit hidden 40"):
        kernels.quant_moe(x, idx, w, gu, quantize("fp8", _weight(40, 16, lead=(3,))))
    with pytest.raises(ValueError, match="down must be a 3-D QuantTensor"):
        kernels.quant_moe(x, idx, w, gu, quantize("fp8", _weight(40, 24)))
    with pytest.raises(ValueError, match="topk_w_Tk"):
        kernels.quant_moe(x, idx, w[:, :1], gu, dn)
    assert quant_moe_triton(x[:0], idx[:0], w[:0], gu, dn).shape == (0, 40)


# ---- dispatch and self-checks ------------------------------------------------------------------------------
def test_dispatch_cpu_is_the_reference_and_override_reaches_triton():
    wl = quantize("nvfp4", _weight(20, 40))
    xl = torch.randn(3, 40)
    x, idx, w, gu, dn = _moe_inputs(7, 40, 4, 2, 24, "w4a16 asym G=32")
    assert kernels.backend_for("quant_linear", xl, wl.data) == "torch"
    assert torch.equal(kernels.quant_linear(xl, wl), quant_linear_torch(xl, wl))
    assert torch.equal(kernels.quant_moe(x, idx, w, gu, dn), quant_moe_torch(x, idx, w, gu, dn))
    with kernels.use_backend("triton", ops=("quant_linear", "quant_moe")):
        assert_close("dispatch linear", kernels.quant_linear(xl, wl), quant_linear_torch(xl, wl), 1e-5, 1e-5)
        assert_close("dispatch moe", kernels.quant_moe(x, idx, w, gu, dn), quant_moe_torch(x, idx, w, gu, dn),
                     1e-5, 1e-5)


def test_selfchecks_pass_in_the_interpreter():
    assert linear_selfcheck(torch.device("cpu")) and moe_selfcheck(torch.device("cpu"))


# ---- GPU: the real shapes ----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("scheme", ["fp8", "w4a16 G=128", "w4a16 asym G=128", "nvfp4"])
def test_gpu_moe_real_shapes(cuda, scheme):
    T, H, E, k, I = 256, 2816, 128, 8, 704  # noqa: E741
    g = torch.Generator(device=cuda).manual_seed(0)
    x = torch.randn(T, H, generator=g, device=cuda).to(torch.bfloat16)
    gu = quantize(scheme, torch.randn(E, 2 * I, H, generator=g, device=cuda) / math.sqrt(H))
    dn = quantize(scheme, torch.randn(E, H, I, generator=g, device=cuda) / math.sqrt(I))
    idx = torch.rand(T, E, generator=g, device=cuda).topk(k, dim=1).indices
    w = torch.rand(T, k, generator=g, device=cuda)
    out = quant_moe_triton(x, idx, w, gu, dn)
    ref = quant_moe_torch(x.float(), idx, w, gu, dn)
    assert_close(f"moe gpu {scheme}", out, ref, 3e-2 * ref.abs().max().item(), 3e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("scheme", ["fp8", "w4a16 asym G=128", "nvfp4"])
@pytest.mark.parametrize("M,N,K", [(256, 4096, 2816), (2048, 2816, 2112), (1, 2112, 2816)])
def test_gpu_linear_real_shapes(cuda, scheme, M, N, K):
    g = torch.Generator(device=cuda).manual_seed(1)
    w = quantize(scheme, torch.randn(N, K, generator=g, device=cuda) / math.sqrt(K))
    x = torch.randn(M, K, generator=g, device=cuda).to(torch.bfloat16)
    ref = quant_linear_torch(x.float(), w)
    out = quant_linear_triton(x, w)
    assert_close(f"linear gpu {scheme} {M}x{N}x{K}", out, ref, 2e-2 * ref.abs().max().item(), 2e-2)
    eye = torch.eye(K, device=cuda, dtype=torch.bfloat16)[:256]  # the compiled dequantization, bit for bit
    assert torch.equal(quant_linear_triton(eye, w), dequantize(w, torch.bfloat16)[:, :256].t())
