"""dgbatch's batch pipeline: Parquet prompts in, one output row per input row out, exactly once.

Public API: `run_job(spec)` (plan, lease, generate, commit, finalize; resumable), `read_results(out)`
(committed rows as an Arrow table), `JobSpec`, and `DiffusionGenerator`, a Ray Data `map_batches` class.
`run_job` is imported lazily: it pulls in Ray, which `dgbatch validate` and readers do not need.
"""

from __future__ import annotations

from typing import Any

from pipeline.sink import read_results, status
from pipeline.spec import JobSpec, SpecError

__all__ = ["JobSpec", "SpecError", "read_results", "status", "run_job", "DiffusionGenerator"]


def __getattr__(name: str) -> Any:
    if name == "run_job":
        from pipeline.executor import run_job

        return run_job
    if name == "DiffusionGenerator":
        from pipeline.ray_data import DiffusionGenerator

        return DiffusionGenerator
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
