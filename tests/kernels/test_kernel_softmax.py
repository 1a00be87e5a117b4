"""softmax in fp32 with a narrow output: the reference is the model's op sequence; Triton vs it."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import assert_close

import kernels
from kernels.softmax import selfcheck, softmax_torch, softmax_triton


@pytest.mark.parametrize("V,block,dtype,out", [(1001, 256, torch.bfloat16, torch.bfloat16),
                                               (300, 512, torch.float32, torch.float32),
                                               (77, 16, torch.float32, torch.bfloat16)])
def test_triton_matches_reference(V, block, dtype, out):
    g = torch.Generator().manual_seed(V)
    x = (torch.randn(2, 3, V, generator=g) * 6).to(dtype)
    x[0, 0, 5:] = float("-inf")  # masked tail: zero probability
    got = softmax_triton(x, out, block_v=block)
    want = softmax_torch(x, out)
    assert got.dtype == out and got.shape == x.shape
    tol = 2**-7 if out == torch.bfloat16 else 1e-6  # bf16: one ulp (the sum's order moves the rounding)
    assert_close("softmax", got.float(), want.float(), 1e-7, tol)
    assert (got[0, 0, 5:] == 0).all()
    assert_close("row sums", got.float().sum(-1), torch.ones(2, 3), 2e-2 if out == torch.bfloat16 else 1e-5)


def test_selfcheck_and_cpu_path_exact():
    assert selfcheck(torch.device("cpu"))
    x = torch.randn(4, 50, dtype=torch.bfloat16)
    want = torch.nn.functional.softmax(x, dim=-1, dtype=torch.float32).to(torch.bfloat16)
    assert torch.equal(kernels.softmax(x, torch.bfloat16), want)  # auto on CPU: the torch reference


@pytest.mark.gpu
def test_gpu_real_vocab(cuda):
    x = (torch.randn(256, 262144, device=cuda) * 8).to(torch.bfloat16)
    got, want = softmax_triton(x, torch.bfloat16).float(), softmax_torch(x, torch.bfloat16).float()
    assert_close("softmax gpu", got, want, 1e-7, 1e-2)
