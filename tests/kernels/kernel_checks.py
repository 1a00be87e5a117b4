"""Shared assertions for kernel tests: tolerances with max and mean error in the message."""

from __future__ import annotations

import torch


def err_msg(name: str, got: torch.Tensor, want: torch.Tensor) -> str:
    d = (got.float() - want.float()).abs()
    return (f"{name}: max err {d.max().item():.3e}, mean err {d.mean().item():.3e}, "
            f"ref max {want.abs().max():.3e}")


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    ok = (got.float() - want.float()).abs() <= atol + rtol * want.float().abs()
    assert ok.all(), err_msg(name, got, want)
