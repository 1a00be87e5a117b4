"""fused_moe: reference vs a per-token definition, routing invariants, Triton (interpreter) vs reference."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from kernel_checks import assert_close

from kernels.fused_moe import fused_moe_grouped, fused_moe_torch, fused_moe_triton
from kernels.moe_align import align_tokens, align_tokens_triton

# the module (kernels/__init__.py's `fused_moe` function shadows the attribute of that name)
fused_moe_mod = importlib.import_module("kernels.fused_moe")


def _inputs(T, H, E, k, I, seed=0, dtype=torch.float32, idle_expert=True):  # noqa: E741
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(dtype)
    gu = (torch.randn(E, 2 * I, H, generator=g) / math.sqrt(H)).to(dtype)
    dn = (torch.randn(E, H, I, generator=g) / math.sqrt(I)).to(dtype)
    pool = E - 1 if idle_expert else E  # the last expert gets zero tokens
    idx = torch.stack([torch.randperm(pool, generator=g)[:k] for _ in range(T)])
    w = torch.rand(T, k, generator=g)
    return x, idx, w, gu, dn


def _per_token(x, idx, w, gu, dn):
    I = dn.shape[2]  # noqa: E741
    out = []
    for t in range(x.shape[0]):
        acc = torch.zeros(x.shape[1], dtype=torch.float64)
        for j in range(idx.shape[1]):
            e = idx[t, j]
            h = gu[e].double() @ x[t].double()
            act = torch.nn.functional.gelu(h[:I], approximate="tanh") * h[I:]
            acc += w[t, j].double() * (dn[e].double() @ act)
        out.append(acc)
    return torch.stack(out)


def test_reference_matches_definition():
    x, idx, w, gu, dn = _inputs(9, 12, 5, 3, 7)
    want = _per_token(x, idx, w, gu, dn).float()
    assert_close("moe ref", fused_moe_torch(x, idx, w, gu, dn), want, 1e-5, 1e-5)


def test_reference_is_differentiable():
    x, idx, w, gu, dn = _inputs(4, 8, 3, 2, 5)
    gu.requires_grad_(True)
    x.requires_grad_(True)
    fused_moe_torch(x, idx, w, gu, dn).square().sum().backward()
    assert x.grad is not None and gu.grad is not None and gu.grad[2].abs().sum() == 0  # idle expert: no grad


def test_align_tokens_invariants():
    idx = torch.tensor([[0, 2], [2, 0], [2, 3], [0, 2], [2, 2]])  # expert 1 idle, expert 2 has 6 rows
    ids, bexp, nblk = align_tokens(idx, 4, 4)
    A = idx.numel()
    assert ids.numel() == bexp.numel() * 4 and bexp.numel() == -(-A // 4) + 4
    n = int(nblk)
    assert n == 1 + 2 + 1  # expert 0: 3 rows -> 1 block, expert 2: 6 -> 2, expert 3: 1 -> 1
    valid = ids[ids < A].long()
    assert sorted(valid.tolist()) == list(range(A))
    for blk in range(n):
        rows = ids[blk * 4:(blk + 1) * 4].long()
        rows = rows[rows < A]
        assert (idx.reshape(-1)[rows] == bexp[blk]).all()
        assert rows.tolist() == sorted(rows.tolist())  # stable: token order within an expert


@pytest.mark.parametrize("T,E,k,block_m,chunk,skew", [
    (5, 4, 2, 4, 64, False),  # one chunk, experts idle
    (63, 5, 2, 16, 8, False),  # many chunks, a partial last chunk
    (64, 7, 3, 16, 4, True),  # most assignments on one expert: it spans several blocks
    (300, 128, 8, 64, 64, False),  # the real expert count and top-k
])
def test_triton_align_matches_reference(T, E, k, block_m, chunk, skew):
    g = torch.Generator().manual_seed(T)
    idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
    if skew:
        idx[:, 0] = 2  # (a token may then list an expert twice: the layout does not care)
    want = align_tokens(idx, E, block_m)
    got = align_tokens_triton(idx.to(torch.int32), E, block_m, chunk=chunk)
    for name, a, b in zip(("sorted_ids", "block_expert", "num_blocks"), want, got):
        assert b.dtype == torch.int32 and torch.equal(a, b), f"{name}: {a.tolist()} != {b.tolist()}"


@pytest.mark.parametrize("T,block_m", [(1, 16), (63, 16), (63, 32)])
def test_triton_matches_reference_fp32(T, block_m):
    x, idx, w, gu, dn = _inputs(T, 40, 5, 2, 24, seed=T)
    out = fused_moe_triton(x, idx, w, gu, dn, block_m=block_m, block_n=16, block_k=16)
    assert_close(f"moe T={T}", out, fused_moe_torch(x, idx, w, gu, dn), 1e-5, 1e-5)


def test_triton_tile_options_do_not_change_results(monkeypatch):
    # bench/gpu.py sweeps tiles, warps and stages; every setting must compute the same thing
    x, idx, w, gu, dn = _inputs(21, 40, 5, 2, 24, seed=3)
    ref = fused_moe_torch(x, idx, w, gu, dn)
    for bn, bk, nw, ns in ((32, 16, 8, 3), (16, 64, 2, 4)):
        out = fused_moe_triton(x, idx, w, gu, dn, block_m=16, block_n=bn, block_k=bk, num_warps=nw,
                               num_stages=ns)
        assert_close(f"moe tiles {bn}x{bk}", out, ref, 1e-5, 1e-5)
    # the down GEMM on its own tile (H = 40 is not a multiple of its 32 columns): its grid has 2 column
    # blocks where gate_up's 16-column tile would give 3
    grids = []
    real = fused_moe_mod.runnable

    class Recorded:  # the down kernel's launcher, noting each grid it is launched on
        def __init__(self, launcher):
            self.launcher = launcher

        def __getitem__(self, grid):
            grids.append(grid)
            return self.launcher[grid]

    def recording(kernel):
        return Recorded(real(kernel)) if kernel is fused_moe_mod._down_kernel else real(kernel)

    monkeypatch.setattr(fused_moe_mod, "runnable", recording)
    out = fused_moe_triton(x, idx, w, gu, dn, block_m=16, block_n=16, block_k=16, down_tile=(32, 16, 2, 3))
    assert_close("moe down tile", out, ref, 1e-5, 1e-5)
    assert [g[1] for g in grids] == [2]
    with pytest.raises(ValueError, match="down_tile must be"):
        fused_moe_triton(x, idx, w, gu, dn, down_tile=(32, 16))


def test_triton_bf16_inputs():
    x, idx, w, gu, dn = _inputs(20, 48, 4, 2, 16, seed=5, dtype=torch.bfloat16)
    out = fused_moe_triton(x, idx, w, gu, dn, block_n=16, block_k=16)
    assert out.dtype == torch.bfloat16
    ref = fused_moe_torch(x.float(), idx, w, gu.float(), dn.float())
    # the kernel keeps gate/up in fp32 and rounds h and each expert output to bf16 once
    assert_close("moe bf16", out, ref, 2e-2, 2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 256, 2048])
@pytest.mark.parametrize("impl", [fused_moe_triton, fused_moe_grouped], ids=["triton", "grouped"])
def test_gpu_real_shapes(cuda, T, impl):
    # the Triton GEMMs, and the grouped-GEMM form, at the real expert shapes
    x, idx, w, gu, dn = (t.to(cuda) for t in _inputs(T, 2816, 128, 8, 704, dtype=torch.bfloat16))
    out = impl(x, idx, w, gu, dn)
    ref = fused_moe_torch(x.float(), idx, w, gu.float(), dn.float())
    assert_close(f"moe gpu T={T}", out, ref, 3e-2, 3e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("T,block_m,down_tile", [(256, 32, (128, 64, 4, 4)), (2048, 128, (256, 64, 8, 3))])
def test_gpu_real_shapes_own_down_tile(cuda, T, block_m, down_tile):
    # the sweep's separate down-GEMM tiles at the real expert shapes (one canvas and eight)
    x, idx, w, gu, dn = (t.to(cuda) for t in _inputs(T, 2816, 128, 8, 704, dtype=torch.bfloat16))
    out = fused_moe_triton(x, idx, w, gu, dn, block_m=block_m, down_tile=down_tile)
    ref = fused_moe_torch(x.float(), idx, w, gu.float(), dn.float())
    assert_close(f"moe gpu T={T} down tile", out, ref, 3e-2, 3e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("T,block_m", [(256, 16), (4096, 64)])
def test_gpu_align_real_shapes(cuda, T, block_m):
    g = torch.Generator().manual_seed(T)
    idx = torch.stack([torch.randperm(128, generator=g)[:8] for _ in range(T)]).to(cuda)
    for a, b in zip(align_tokens(idx, 128, block_m), align_tokens_triton(idx, 128, block_m)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("T,E,k,skew", [(1, 5, 2, False), (37, 6, 2, False), (64, 7, 3, True),
                                        (300, 128, 8, False)])
def test_grouped_form_matches_reference_fp32(T, E, k, skew):
    # the grouped-GEMM form: idle experts (empty groups), a single token, one expert holding most rows
    x, idx, w, gu, dn = _inputs(T, 48, E, k, 24, seed=T)
    if skew:
        idx[:, 0] = 2
    out = fused_moe_grouped(x, idx, w, gu, dn)
    assert_close(f"moe grouped T={T}", out, fused_moe_torch(x, idx, w, gu, dn), 1e-5, 1e-5)


def test_grouped_form_bf16_and_empty():
    x, idx, w, gu, dn = _inputs(20, 48, 4, 2, 16, seed=5, dtype=torch.bfloat16)
    out = fused_moe_grouped(x, idx, w, gu, dn)
    assert out.dtype == torch.bfloat16
    # same roundings as the reference (gate/up and each expert output in bf16): equal up to the GEMMs' own
    # accumulation order
    assert_close("moe grouped bf16", out, fused_moe_torch(x, idx, w, gu, dn), 2e-2, 2e-2)
    assert fused_moe_grouped(x[:0], idx[:0], w[:0], gu, dn).shape == (0, 48)
    with pytest.raises(ValueError, match="do not fit hidden"):
        fused_moe_grouped(x, idx, w, gu[:, :, :40], dn)

