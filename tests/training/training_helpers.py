"""What the training tests share: a shipped model directory's fixtures and layout check, and the check that a
run stopped part-way and resumed ends exactly where an uninterrupted run ends (train/loop.py,
train/sudoku.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model import DiffusionGemma, load_tokenizer

SHIPPED_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja", "README.md"}


def shipped_fixtures(asset: Path) -> tuple:
    """Module-scoped pytest fixtures (`ours`, `tok`): the model in `asset` loaded in fp32, and its tokenizer.
    Bind both at a test module's top level: `ours, tok = shipped_fixtures(ASSET)`."""

    @pytest.fixture(scope="module")
    def ours() -> DiffusionGemma:
        return DiffusionGemma.from_pretrained(str(asset), dtype=torch.float32).eval()

    @pytest.fixture(scope="module")
    def tok():
        return load_tokenizer(str(asset))

    return ours, tok


def assert_shipped_layout(asset: Path, max_bytes: int = 20 * 2**20) -> None:
    """The HF-layout files and a model card are there, no pickle, and the directory fits in max_bytes."""
    names = {p.name for p in asset.iterdir()}
    assert SHIPPED_FILES <= names, SHIPPED_FILES - names
    assert not {n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))}
    assert sum(p.stat().st_size for p in asset.iterdir()) <= max_bytes


def assert_learns_and_resumes(run: Callable[[Path, int], dict], tmp_path: Path, stop_after: int, steps: int,
                              drop: float = 0.3, window: int = 2) -> list[float]:
    """run(out_dir, stop_after) trains (0: to the end) and returns the final state. The loss falls by `drop`
    (mean of the first vs the last `window` steps); a run stopped at `stop_after` and resumed gives the same
    losses and weights. Returns the uninterrupted run's losses."""
    losses = [v for _, v in run(tmp_path / "a", 0)["losses"]]
    assert sum(losses[-window:]) / window < sum(losses[:window]) / window - drop, losses
    run(tmp_path / "b", stop_after)
    assert [v for _, v in run(tmp_path / "b", 0)["losses"]] == losses
    wa = load_file(str(tmp_path / "a" / "weights.safetensors"))
    wb = load_file(str(tmp_path / "b" / "weights.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)
    assert json.loads((tmp_path / "b" / "state.json").read_text())["step"] == steps
    return losses
