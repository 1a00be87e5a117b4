"""Validators for tests/pipeline/test_validators.py, named in job specs as "validator_fixtures:<name>".

Importable as a top-level module wherever the tests run: tests/pipeline/conftest.py puts this folder on
sys.path, and the driver-kill helper runs tests/pipeline/pipeline_driver.py, whose folder Ray adds to its
workers' sys.path (a driver script's directory goes to `py_driver_sys_path`).
"""

from __future__ import annotations

from pipeline.backend import StubBackend, StubBackendFactory
from pipeline.rows import PreparedRow, row_seed
from pipeline.validators import regeneration_seed

JOB_SEED = 0  # the job seed the specs using `reject_first_two` leave at its default
BOOM = "BOOM"  # a prompt holding it makes `raise_on_boom` raise
NOT_CALLABLE = 3


def stub_text(prompt: str, seed: int) -> str:
    """What the stub backend writes for `prompt` at `seed` (its text depends on nothing else here)."""
    return StubBackend(StubBackendFactory(cost_per_row_s=0.0)).generate(
        [PreparedRow(0, "x", seed, prompt)])[0].text


def reject_first_two(text: str, row: dict) -> str | None:
    """Rejects the stub's texts of attempts 1 and 2 of the row (id column `key`, job seed 0), so attempt 3
    is the first one accepted. Stateless: it recomputes those texts from the row's seed, so it gives the
    same verdicts in every process, on every retry and resume."""
    seed = row_seed(JOB_SEED, str(row["key"]))
    early = {stub_text(row["prompt"], regeneration_seed(seed, k)): k for k in (1, 2)}
    if text in early:
        return f"attempt {early[text]} is one of the first two"
    return None


def always_reject(text: str, row: dict) -> str:
    return f"no digit may repeat in {row['prompt']!r}"


def always_false(text: str, row: dict) -> bool:
    return False


def accept(text: str, row: dict) -> bool:
    return True


def raise_on_boom(text: str, row: dict) -> None:
    if BOOM in row["prompt"]:
        raise KeyError("cell r9c9")


def returns_number(text: str, row: dict) -> int:
    return 42
