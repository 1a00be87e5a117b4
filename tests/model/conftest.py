"""Make the repository root importable first, so `import model` is the package, not this test directory;
the `model` fixture: a tiny random DiffusionGemma whose norm scales and layer scalars are away from 1.

(Without `pythonpath = ["."]` in the pytest config, a bare `pytest` only sees tests/ on sys.path, where the
directory tests/model would be picked up as a namespace package named `model`.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture(scope="module")
def model():
    import torch

    from model import DiffusionGemma, DiffusionGemmaConfig

    torch.manual_seed(0)
    m = DiffusionGemma(DiffusionGemmaConfig.tiny()).eval()
    with torch.no_grad():  # scales away from 1 so every path matters
        for p in m.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
        for b in m.buffers():
            b.uniform_(0.5, 1.5)
    return m
