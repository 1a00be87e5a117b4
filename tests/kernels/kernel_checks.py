"""Shared helpers for kernel tests: tolerances with max and mean error in the message, and loading a bench
script (bench/ is scripts, not a package) as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch


def load_bench(name: str) -> ModuleType:
    """bench/<name>.py as a fresh module."""
    path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # registered before it runs, as an import would (dataclasses look it up)
    spec.loader.exec_module(mod)
    return mod


def err_msg(name: str, got: torch.Tensor, want: torch.Tensor) -> str:
    d = (got.float() - want.float()).abs()
    return (f"{name}: max err {d.max().item():.3e}, mean err {d.mean().item():.3e}, "
            f"ref max {want.abs().max():.3e}")


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    ok = (got.float() - want.float()).abs() <= atol + rtol * want.float().abs()
    assert ok.all(), err_msg(name, got, want)
