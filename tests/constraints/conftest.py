"""Shared fixtures: small tokenizers built locally, a private compile cache, random-logit rollouts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so `tests.constraints.tok_factory` imports

from pipeline.constraints import CompileConfig  # noqa: E402
from tests.constraints.tok_factory import byte_level, gemma_style  # noqa: E402


@pytest.fixture(scope="session")
def gemma_tok():
    return gemma_style(600)


@pytest.fixture(scope="session")
def bytelevel_tok():
    return byte_level(600)


@pytest.fixture
def cfg(tmp_path) -> CompileConfig:
    return CompileConfig(cache_dir=tmp_path / "cache", in_process=True)


def rollout(hook, vocab_size: int, *, max_new_tokens: int, canvas: int, seed: int, scale: float = 3.0):
    """Call the hook canvas by canvas with random logits, as the engine would; return committed ids."""
    g = torch.Generator().manual_seed(seed)
    state, tokens, left = hook.initial_state(), [], max_new_tokens
    while left > 0:
        logits = torch.randn(canvas, vocab_size, generator=g) * scale
        out, state, finished = hook.commit(logits, state, tokens_left=left, last_canvas=left <= canvas)
        assert out.shape == (canvas,) and out.dtype == torch.long
        tokens += out[: min(canvas, left)].tolist()
        left -= canvas
        if finished:
            return tokens, state
    return tokens, state
