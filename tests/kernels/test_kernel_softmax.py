"""softmax in fp32 with a narrow output: the reference is the model's op sequence; Triton vs it."""

from __future__ import annotations

import math

import pytest
import torch
from kernel_checks import assert_close

import kernels
from kernels.logit_epilogue import logit_epilogue_triton
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


@pytest.mark.parametrize("dtype,with_temp", [(torch.float32, True), (torch.bfloat16, True),
                                             (torch.bfloat16, False)])
def test_head_mode_is_the_epilogue_copy_then_softmax(dtype, with_temp):
    # the GPU step's self-conditioning input straight from the raw LM head output: equal to the reference,
    # and bit for bit the epilogue kernel's narrow copy followed by the plain softmax kernel
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 3, 517, generator=g) * 40).to(dtype)
    temp = torch.tensor([0.7, 1.4]) if with_temp else None
    got = softmax_triton(x, dtype, cap=30.0, temperature_R=temp, block_v=128)
    want = softmax_torch(x, dtype, cap=30.0, temperature_R=temp)
    assert got.dtype == dtype
    # tanh from exp moves y by an fp32 ulp or so, and the interpreter's bf16 cast truncates; either can move
    # y's bf16 copy by one bf16 ulp (0.25 at |y| = 43, the cap 30 over temperature 0.7), which scales p by up
    # to e^ulp
    y_max = 30.0 / (temp.min().item() if with_temp else 1.0)
    ulp = 2.0 ** (math.floor(math.log2(y_max)) - 7)
    rtol = math.expm1(ulp) + 1e-3 if dtype == torch.bfloat16 else 1e-5
    assert_close("head softmax", got.float(), want.float(), 1e-6, rtol)
    narrow = logit_epilogue_triton(x, 30.0, temp, dtype, keep_fp32=False)[1]
    assert torch.equal(got, softmax_triton(narrow, dtype, block_v=128))
    with pytest.raises(ValueError, match="temperature_R must be"):
        kernels.softmax(x, dtype, cap=30.0, temperature_R=torch.ones(3))
    with pytest.raises(ValueError, match="only in head mode"):
        kernels.softmax(x, dtype, temperature_R=torch.ones(2))


@pytest.mark.gpu
def test_gpu_real_vocab(cuda):
    x = (torch.randn(256, 262144, device=cuda) * 8).to(torch.bfloat16)
    got, want = softmax_triton(x, torch.bfloat16).float(), softmax_torch(x, torch.bfloat16).float()
    assert_close("softmax gpu", got, want, 1e-7, 1e-2)


@pytest.mark.gpu
def test_gpu_head_mode_real_vocab(cuda):
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(2, 128, 262144, generator=g) * 40).to(cuda, torch.bfloat16)
    temp = torch.tensor([0.7, 1.4], device=cuda)
    got = softmax_triton(x, torch.bfloat16, cap=30.0, temperature_R=temp)
    narrow = logit_epilogue_triton(x, 30.0, temp, torch.bfloat16, keep_fp32=False)[1]
    assert_close("head softmax gpu", got.float(), softmax_triton(narrow, torch.bfloat16).float(), 1e-7, 2**-7)
