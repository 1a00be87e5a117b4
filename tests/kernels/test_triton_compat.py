"""kernels/_triton_compat.py: kernels and the @jit helpers they call run in either mode, whatever the mode at
import time."""

from __future__ import annotations

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

import kernels._triton_compat as compat
import kernels.sampler as sampler


def test_helpers_decorated_for_the_interpreter_are_rejitted_for_the_gpu(monkeypatch):
    # as if kernels/sampler.py had been imported with TRITON_INTERPRET=1: kernel and helper interpreted
    kernel = InterpretedFunction(sampler._derive_keys_kernel.fn)
    monkeypatch.setattr(compat, "_REWRAPPED", {})  # this temporary kernel's entry goes with the test
    monkeypatch.setitem(vars(sampler), "mix32_u32", InterpretedFunction(sampler.mix32_u32.fn))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    rewrapped = compat.runnable(kernel)
    assert isinstance(rewrapped, JITFunction) and isinstance(sampler.mix32_u32, JITFunction)


def test_compiled_helpers_run_inside_interpreted_kernels(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert isinstance(sampler.mix32_u32, JITFunction)  # imported in compiled mode, as in a normal run
    seed = torch.tensor([3, -9, 2**50])
    got = sampler.derive_keys_triton(seed, 1, 4, 5)
    assert torch.equal(got, sampler.derive_keys_torch(seed, 1, 4, 5))
    assert isinstance(sampler.mix32_u32, JITFunction)  # the interpreted twin lived for the launch only


@pytest.mark.parametrize("mode", ["0", "1"])
def test_runnable_is_idempotent_per_mode(monkeypatch, mode):
    monkeypatch.setenv("TRITON_INTERPRET", mode)
    assert compat.runnable(sampler._derive_keys_kernel) is compat.runnable(sampler._derive_keys_kernel)
