"""logit_epilogue (softcap, temperature, narrow copy): the reference is the model's and the reference
sampler's op sequence; Triton (interpreter) vs it; GPU at real shapes."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import assert_close

import kernels
from kernels.logit_epilogue import logit_epilogue_torch, logit_epilogue_triton, selfcheck


def _x(dtype, shape=(3, 5, 1001)):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(*shape, generator=g) * 50).to(dtype)  # odd V: a partial last block
    x[0, 0, :4] = torch.tensor([0.0, 1e-6, -3e-4, 500.0]).to(dtype)  # zero, tiny, far into saturation
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_temp", [False, True])
def test_triton_matches_reference(dtype, with_temp):
    x = _x(dtype)
    temp = torch.tensor([0.4, 0.7, 1.0]) if with_temp else None
    y, n = logit_epilogue_triton(x, 30.0, temp, torch.bfloat16)
    y_ref, n_ref = logit_epilogue_torch(x, 30.0, temp, torch.bfloat16)
    assert y.dtype == torch.float32 and n.dtype == torch.bfloat16 and y.shape == n.shape == x.shape
    assert_close("epilogue", y, y_ref, 1e-4, 0.0)  # |y| up to 30 / 0.4: a few fp32 ulps of the softcap
    assert_close("narrow", n.float(), n_ref.float(), 1e-4, 2**-7)  # at most one bf16 ulp apart
    assert y.abs().max() <= 30.0 / (0.4 if with_temp else 1.0)
    assert torch.equal(torch.sign(y), torch.sign(x.float()))
    assert logit_epilogue_triton(x, 30.0)[1] is None


def test_reference_is_the_model_op_sequence():
    x, temp = _x(torch.bfloat16), torch.tensor([0.4, 0.7, 1.0])
    y, n = logit_epilogue_torch(x, 30.0, temp, torch.bfloat16)
    want = (torch.tanh(x.float() / 30.0) * 30.0).div_(temp[:, None, None])
    assert torch.equal(y, want) and torch.equal(n, want.to(torch.bfloat16))


def test_selfcheck_dispatch_and_bad_temperature():
    assert selfcheck(torch.device("cpu"))
    x = _x(torch.bfloat16, (2, 3, 40))
    y, n = kernels.logit_epilogue(x, 30.0)  # auto on CPU: the torch reference, exactly
    assert n is None and torch.equal(y, torch.tanh(x.float() / 30.0) * 30.0)
    with kernels.use_backend("triton", ops=("logit_epilogue",)):
        assert_close("dispatched", kernels.logit_epilogue(x, 30.0)[0], y, 1e-4, 0.0)
    with pytest.raises(ValueError, match="temperature_R must be"):
        kernels.logit_epilogue(x, 30.0, torch.ones(3))


@pytest.mark.gpu
def test_gpu_real_vocab(cuda):
    x = (torch.randn(8, 256, 262144, device=cuda) * 40).to(torch.bfloat16)
    temp = torch.linspace(0.4, 0.8, 8, device=cuda)
    y, n = logit_epilogue_triton(x, 30.0, temp, torch.bfloat16)
    y_ref, n_ref = logit_epilogue_torch(x, 30.0, temp, torch.bfloat16)
    assert_close("epilogue gpu", y, y_ref, 1e-4, 0.0)
    assert_close("narrow gpu", n.float(), n_ref.float(), 1e-4, 2**-7)
