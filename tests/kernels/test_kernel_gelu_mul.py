"""gelu_mul (the dense MLPs' gated GELU): reference is the model's op sequence; Triton (interpreter) vs it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import assert_close

import kernels
from kernels.gelu_mul import gelu_mul_torch, gelu_mul_triton, selfcheck


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_reference(dtype):
    g0 = torch.Generator().manual_seed(1)
    g, u = ((torch.randn(3, 7, 333, generator=g0) * 4).to(dtype) for _ in range(2))  # odd size: partial block
    g[0, 0, :3] = torch.tensor([0.0, 60.0, -60.0]).to(dtype)  # zero and both saturated ends
    want = gelu_mul_torch(g, u)
    assert torch.equal(want, F.gelu(g, approximate="tanh") * u)
    got = gelu_mul_triton(g, u)
    assert got.dtype == dtype and got.shape == g.shape
    tol = 1e-5 if dtype == torch.float32 else 2**-6  # bf16: the interpreter truncates casts
    assert_close("gelu_mul", got.float(), want.float(), tol, tol)


def test_selfcheck_dispatch_and_bad_args():
    assert selfcheck(torch.device("cpu"))
    g, u = torch.randn(4, 9), torch.randn(4, 9)
    assert torch.equal(kernels.gelu_mul(g, u), gelu_mul_torch(g, u))  # auto on CPU: the reference
    with pytest.raises(ValueError, match="differ"):
        gelu_mul_triton(g, u[:, :8])


def test_halves_of_a_gate_up_output_read_in_place():
    # the grouped-GEMM MoE hands over the two halves of its [A, 2I] output: row-strided views, no copies
    gu = torch.randn(37, 2 * 45, generator=torch.Generator().manual_seed(2))
    g, u = gu[:, :45], gu[:, 45:]
    assert not g.is_contiguous()
    assert torch.equal(gelu_mul_triton(g, u), gelu_mul_triton(g.contiguous(), u.contiguous()))
    assert_close("gelu_mul halves", gelu_mul_triton(g, u), gelu_mul_torch(g, u), 1e-5, 1e-5)
    col = torch.randn(9, 5).t()  # a transposed operand (inner stride 5): copied, still right
    assert_close("gelu_mul transposed", gelu_mul_triton(col, col), gelu_mul_torch(col, col), 1e-5, 1e-5)


@pytest.mark.gpu
def test_gpu_real_shapes(cuda):
    g, u = (torch.randn(2048, 2112, device=cuda).to(torch.bfloat16) for _ in range(2))
    assert_close("gelu_mul gpu", gelu_mul_triton(g, u).float(), gelu_mul_torch(g, u).float(), 1e-2, 2**-7)
