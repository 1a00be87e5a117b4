"""A Ray Data adapter: `ds.map_batches(DiffusionGenerator, ...)` with the same backend and row logic.

For users who live in Ray Data. It is a plain callable class over Arrow/pandas batches (this file does
not import Ray), so it runs under `ActorPoolStrategy` / `concurrency=` and equally in a unit test:

    ds = ray.data.read_parquet("s3://bucket/prompts/")
    out = ds.map_batches(DiffusionGenerator, fn_constructor_kwargs={"spec": {"input": {"prompt_column":
        "prompt"}, "generation": {"max_new_tokens": 64}}}, concurrency=2, num_gpus=1, batch_size=64,
        batch_format="pyarrow")
    out.write_parquet("s3://bucket/generated/")

Ray Data owns retries and writes here, so the exactly-once and resume guarantees of `run_job` do not
apply (they are why `run_job` has its own driver and coordinator, pipeline/executor.py). Row ids are
`input.id_column` when set (its Arrow type kept: int64 ids stay int64), else
`batch-<hash of the batch's prompts>#<row in batch>`, stable for a given batch.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from pipeline.backend import EngineBackendFactory
from pipeline.generator import RowGenerator
from pipeline.spec import JobSpec

_PLACEHOLDER = "ray-data://in-memory"


class DiffusionGenerator:
    def __init__(self, spec: JobSpec | dict, backend_factory: Any = None):
        if isinstance(spec, dict):
            spec = dict(spec)
            spec["input"] = {"path": _PLACEHOLDER, **spec.get("input", {})}
            spec["output"] = {"path": _PLACEHOLDER, **spec.get("output", {})}
        self.spec = JobSpec.parse(spec, source="DiffusionGenerator spec")
        factory = backend_factory if backend_factory is not None else EngineBackendFactory()
        self.gen = RowGenerator(self.spec, factory(self.spec))
        self.columns = self.gen.input_columns()

    def __call__(self, batch: Any) -> pa.Table:
        table = _to_arrow(batch)
        missing = [c for c in self.columns if c not in table.column_names]
        if missing:
            raise KeyError(f"DiffusionGenerator: batch lacks columns {missing}; has {table.column_names}")
        key = ""
        if not self.spec.input.id_column:
            h = hashlib.blake2b(digest_size=8)
            for v in table.column(self.columns[0]).to_pylist():
                h.update(repr(v).encode())
            key = f"batch-{h.hexdigest()}"
        out, _ = self.gen.process(table.select(self.columns), file_rel=key, first_row=0, attempt=1)
        return out


def _to_arrow(batch: Any) -> pa.Table:
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):
        return pa.table({k: list(v) if not isinstance(v, (list, pa.Array)) else v for k, v in batch.items()})
    return pa.Table.from_pandas(batch, preserve_index=False)  # a pandas DataFrame
