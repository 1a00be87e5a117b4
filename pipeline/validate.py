"""Checks that need the world, run before any generation: inputs, columns, output prefix, model, constraints.

`validate_job` is what `dgbatch validate` runs and what `run_job` runs first, so a corrupt Parquet file, a
missing column, an unreachable bucket or a bad model path fails the job before a replica starts, with a
`SpecError` naming the file, column, URL or path.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.shards import InputFile, list_inputs, plan_shards
from pipeline.spec import JobSpec, SpecError
from pipeline.storage import Storage, filesystem


@dataclass
class Validated:
    files: list[InputFile]
    rows: int
    shards: int
    output: Storage


def required_columns(spec: JobSpec) -> dict[str, str]:
    """column -> the spec field that needs it."""
    need: dict[str, str] = {}
    if spec.input.prompt_column:
        need[spec.input.prompt_column] = "input.prompt_column"
    for c in spec.input.template_columns() if spec.input.template else []:
        need.setdefault(c, "input.template")
    if spec.input.id_column:
        need.setdefault(spec.input.id_column, "input.id_column")
    for c in spec.output.passthrough_columns:
        need.setdefault(c, "output.passthrough_columns")
    if spec.structured_output and spec.structured_output.schema_column:
        need.setdefault(spec.structured_output.schema_column, "structured_output.schema_column")
    return need


def check_columns(spec: JobSpec, files: list[InputFile]) -> None:
    need = required_columns(spec)
    st = spec.storage
    for f in files:
        fs, path = filesystem(f.path, st.endpoint_url, st.options)
        with fs.open(path, "rb") as fh:
            names = pq.ParquetFile(fh).schema_arrow.names
        for col, field in need.items():
            if col not in names:
                raise SpecError(f"input file {f.path}: missing column {col!r} (needed by {field}); "
                                f"columns are {names}")


def check_unique_ids(spec: JobSpec, files: list[InputFile]) -> None:
    """With input.id_column, ids must be unique across all files (exactly-once is defined on them)."""
    col, st, seen = spec.input.id_column, spec.storage, {}
    for f in files:
        fs, path = filesystem(f.path, st.endpoint_url, st.options)
        with fs.open(path, "rb") as fh:
            ids = pq.read_table(fh, columns=[col]).column(col)
        values = pc.cast(ids, "string").to_pylist()
        for i, v in enumerate(values):
            if v is None:
                continue  # a null id becomes an error row with a derived id (pipeline.rows)
            if v in seen:
                raise SpecError(f"input.id_column {col!r}: id {v!r} appears twice ({seen[v]} and "
                                f"{f.path} row {i}); ids must be unique")
            seen[v] = f"{f.path} row {i}"


def validate_job(spec: JobSpec, *, check_model: bool = True) -> Validated:
    st = spec.storage
    files = list_inputs(spec.input.path, st.endpoint_url, st.options)
    check_columns(spec, files)
    if spec.input.id_column:
        check_unique_ids(spec, files)
    output = Storage(spec.output.path, st.endpoint_url, st.options)
    output.check_writable()
    if check_model:
        from pipeline.model_path import check_model_path

        check_model_path(spec.model)
    if spec.structured_output is not None:
        from pipeline.backend import constraints_module

        constraints_module()
    n_shards = len(plan_shards(files, spec.resources.shard_rows))
    return Validated(files, sum(f.num_rows for f in files), n_shards, output)
