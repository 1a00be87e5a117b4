"""One input table in, one output table out: the unit of work shared by the replica and the Ray Data adapter.

`RowGenerator.process` prepares rows (ids, seeds, prompts; bad rows become error rows without touching the
model), sends the good ones to the backend (each as its `generation.n` samples, all in one backend call;
with `structured_output.validator`, rejected samples go back in one call per round: pipeline/validators.py),
and assembles the output table with the passthrough columns, n output rows per input row in (input order,
sample_index) order (pipeline/outputs.py). Rows the shard reader could not decode (`unreadable`, from
pipeline.shards.read_shard) are error rows like any other bad row. It also tallies rows by status and
tokens for the commit marker and the metrics. `job_columns` (what a job reads, from its spec),
`error_rows` (rows given up on) and `output_schema` need no backend. No storage and no Ray here.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.backend import Backend
from pipeline.metrics import Metrics
from pipeline.outputs import STATUSES, RowResult, build_table, error_result
from pipeline.rows import PreparedRow, output_ids, prepare_rows, row_columns, samples
from pipeline.spec import JobSpec
from pipeline.validators import Validator


@dataclass
class BatchStats:
    rows: int = 0  # output rows (samples), as the commit marker's `rows` and `rows_by_status` count them
    by_status: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATUSES})
    tokens: int = 0
    denoising_steps: int = 0
    model_s: float = 0.0  # seconds spent inside the backend

    def to_json(self) -> dict:
        return {"rows": self.rows, "rows_by_status": dict(self.by_status), "tokens": self.tokens,
                "denoising_steps": self.denoising_steps, "model_s": round(self.model_s, 6)}


def job_columns(spec: JobSpec) -> list[str]:
    """The input columns a job reads, from its spec alone: the row recipe's (prompt, template, messages or
    openai-batch columns, id, settings: pipeline/rows.py `row_columns`), passthrough, per-row schema; each
    once, in that order (the first is the prompt's)."""
    cols = row_columns(spec.input)
    for c in spec.output.passthrough_columns + list(extra_columns(spec)):
        if c not in cols:
            cols.append(c)
    return cols


def extra_columns(spec: JobSpec) -> tuple[str, ...]:
    """Input columns a row carries to the backend (PreparedRow.extra): its JSON Schema, its pin template."""
    so, pins = spec.structured_output, spec.generation.pins
    cols = (so.schema_column if so is not None else None, pins.column if pins is not None else None)
    return tuple(c for c in cols if c)


class RowGenerator:
    def __init__(self, spec: JobSpec, backend: Backend, metrics: Metrics | None = None):
        self.spec, self.backend, self.metrics = spec, backend, metrics
        so = spec.structured_output
        self.extra_columns = extra_columns(spec)
        self.validator = Validator(so.validator, so.max_regenerations) if so is not None and so.validator \
            else None

    def input_columns(self) -> list[str]:
        """Columns a shard read needs (`job_columns`)."""
        return job_columns(self.spec)

    def warm_up(self) -> None:
        """Pay the output path's one-off costs now, at replica start-up, not inside the first shard.

        pyarrow imports pandas (~0.6 s on a busy 2-core box) the first time `pa.array` sees a Python list,
        and the Parquet writer sets up its codec on first use. Both are per-process costs of the same kind
        as loading the model, so they belong to start-up; without this the first shard of every replica
        carried them (measured: ~0.5 s of a 1.3 s shard).
        """
        row = PreparedRow(0, "warm-up", 0, None, "warm-up")
        out = build_table([row], [error_result("warm-up")], pa.table({"_": [0]}).select([]), attempt=0,
                          structured=self.spec.structured_output is not None,
                          logprobs=self.spec.generation.logprobs, choice_scores=_choice_scores(self.spec),
                          generations=self.validator is not None)
        pq.write_table(out, io.BytesIO(), compression="zstd")

    def process(self, table: pa.Table, *, file_rel: str, first_row: int, attempt: int,
                unreadable: dict[int, str] | None = None) -> tuple[pa.Table, BatchStats]:
        prepared = prepare_rows(table, self.spec.input, job_seed=self.spec.generation.seed, file_rel=file_rel,
                                first_row=first_row, extra_columns=self.extra_columns, unreadable=unreadable)
        rows = samples(prepared, self.spec.generation.n)
        good = [r for r in rows if r.error is None]
        stats = BatchStats(rows=len(rows))
        t0 = time.perf_counter()
        if self.validator is not None and good:  # the rows come back with the seeds that made their texts
            good, got = self.validator.generate(self.backend.generate, good, table.to_pylist())
        else:
            got = self.backend.generate(good) if good else []
        stats.model_s = time.perf_counter() - t0
        if len(got) != len(good):
            raise RuntimeError(f"backend returned {len(got)} results for {len(good)} rows")
        by_key = {(r.index, r.sample): (r, res) for r, res in zip(good, got)}
        pairs = [by_key.get((r.index, r.sample)) or (r, error_result(r.error or "no result")) for r in rows]
        rows = [r for r, _ in pairs]  # a regenerated sample carries the seed that made its text
        results: list[RowResult] = [res for _, res in pairs]
        for res in results:
            stats.by_status[res.status] += 1
            stats.tokens += res.num_tokens
            stats.denoising_steps += res.denoising_steps
        if self.metrics is not None:
            for s, n in stats.by_status.items():
                self.metrics.rows(s, n)
            self.metrics.tokens(stats.tokens)
            self.metrics.denoising_steps(stats.denoising_steps, max(1, len(good)))
            if stats.model_s > 0:
                self.metrics.tokens_per_s(stats.tokens / stats.model_s)
        return _table(self.spec, table, prepared, rows, results, attempt), stats


def error_rows(spec: JobSpec, table: pa.Table, *, file_rel: str, first_row: int, attempt: int,
               message: str, unreadable: dict[int, str] | None = None) -> pa.Table:
    """Output rows for input rows that could not be generated (the driver gives up on them).

    Same ids and types as `RowGenerator.process` gives, so these rows join the shard's other pieces.
    """
    prepared = prepare_rows(table, spec.input, job_seed=spec.generation.seed, file_rel=file_rel,
                            first_row=first_row, extra_columns=extra_columns(spec), unreadable=unreadable)
    rows = samples(prepared, spec.generation.n)
    results = [error_result(r.error or f"row {r.id}: {message}") for r in rows]
    return _table(spec, table, prepared, rows, results, attempt)


def _table(spec: JobSpec, table: pa.Table, prepared: list[PreparedRow], rows: list[PreparedRow],
           results: list[RowResult], attempt: int) -> pa.Table:
    """The output table of `rows` (the samples of `prepared`, which were prepared from `table`): ids and
    passthrough cells repeated for each sample of their input row."""
    passthrough = table.select(spec.output.passthrough_columns)
    ids = output_ids(table, spec.input, prepared)
    if len(rows) != len(prepared):
        take = pa.array([r.index for r in rows], pa.int64())
        ids = ids.take(take)
        # a table with no columns loses its row count in take(): build that one from a placeholder column
        passthrough = passthrough.take(take) if passthrough.num_columns else \
            pa.table({"_": pa.nulls(len(rows))}).select([])
    return build_table(rows, results, passthrough, attempt=attempt, ids=ids,
                       structured=spec.structured_output is not None, logprobs=spec.generation.logprobs,
                       choice_scores=_choice_scores(spec), generations=_validated(spec))


def _validated(spec: JobSpec) -> bool:
    """Whether the output has a `generations` column: a validator regenerates rejected samples."""
    return spec.structured_output is not None and spec.structured_output.validator is not None


def _choice_scores(spec: JobSpec) -> bool:
    """Whether the output has a `choice_scores` column: logprobs asked for under a choice constraint."""
    return spec.generation.logprobs and spec.structured_output is not None and \
        spec.structured_output.choice is not None


def output_schema(spec: JobSpec, input_schema: pa.Schema, file_rel: str) -> pa.Schema:
    """The schema of the job's output table for an input file of `input_schema`: the table `process` and
    `error_rows` build, taken from an empty one (no backend, no rows)."""
    empty = input_schema.empty_table().select(job_columns(spec))
    return error_rows(spec, empty, file_rel=file_rel, first_row=0, attempt=0, message="").schema
