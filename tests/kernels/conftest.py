"""Kernel tests: CPU tests run Triton in its interpreter; `gpu`-marked tests compile for CUDA or skip.

Triton reads TRITON_INTERPRET when a kernel is decorated, but kernels/_triton_compat.runnable() re-wraps a
kernel for the current mode at launch time, so a per-test environment variable is enough and does not
depend on import order. Scoping it per test (not process-wide) keeps other areas' GPU runs compiled.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _triton_mode(request, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0" if request.node.get_closest_marker("gpu") else "1")


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch.device("cuda")
