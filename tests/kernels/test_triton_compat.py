"""kernels/_triton_compat.py: kernels and the @jit helpers they call run in either mode, whatever the mode at
import time."""

from __future__ import annotations

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

import kernels._triton_compat as compat
import kernels.stream_keys as sampler


def test_helpers_decorated_for_the_interpreter_are_rejitted_for_the_gpu(monkeypatch):
    # as if kernels/stream_keys.py had been imported with TRITON_INTERPRET=1: kernel and helper interpreted
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


def test_an_interpreted_launch_leaves_triton_language_as_it_found_it(monkeypatch):
    # the interpreter re-patches triton.language when a kernel calls an interpreted @jit function (tl.sum
    # here) and never restores that; left in place, the same process can no longer compile a kernel for a GPU
    import triton.language as tl

    from kernels.norm_rope import norm_rope_torch, norm_rope_triton

    watched = (tl, tl.core, tl.math, tl.tensor, tl.dtype)
    before = [dict(vars(obj)) for obj in watched]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x, w = torch.randn(1, 2, 3, 8), torch.rand(8) + 0.5
    cos, sin = torch.ones(1, 2, 8), torch.zeros(1, 2, 8)
    assert torch.allclose(norm_rope_triton(x, w, 1e-6, cos, sin), norm_rope_torch(x, w, 1e-6, cos, sin),
                          atol=1e-5)
    for obj, was in zip(watched, before):
        now = dict(vars(obj))
        changed = sorted(k for k in set(was) | set(now) if was.get(k, None) is not now.get(k, None))
        assert not changed, f"{getattr(obj, '__name__', obj)}: {changed[:8]}"
