"""Shared tiny checkpoints for the engine tests (built once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import tiny_pair  # noqa: E402


@pytest.fixture(scope="session")
def eos_pair(tmp_path_factory):
    """Ids 5 and 7 are frequent argmaxes: EOS hits with random weights."""
    return tiny_pair(tmp_path_factory.mktemp("eos"), seed=0, boost={5: 1.5, 7: 1.3})


@pytest.fixture(scope="session")
def stop_pair(tmp_path_factory):
    """Id 9 dominates: argmax canvases get stable and confident, so rows freeze (adaptive stop) at
    different steps; id 5 is a rarer EOS."""
    return tiny_pair(tmp_path_factory.mktemp("stop"), seed=0, boost={9: 6.0, 5: 1.3})
