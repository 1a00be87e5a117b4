"""The output row: its columns, their Arrow types, and building a shard's output table.

Columns, in order: `id`, the passthrough columns (input types kept), `status` ("ok" | "invalid" |
"error"), `text`, `error` (message for non-ok rows), `num_tokens`, `canvases`, `denoising_steps`,
`tokens_per_forward`, `seed` (the sample's: pipeline/rows.py `sample_seed`; after regenerations, the one
that made the text: pipeline/validators.py `regeneration_seed`), `attempt` (the shard's), `latency_s` (seconds
of engine time the row's batch took), `sample_index` (int32, 0..n-1 for `generation.n` samples), then `json`
when structured output is on and `logprobs` (list<float32>, each committed token's log-probability) when
`generation.logprobs` is, plus `choice_scores` (list<float32>: each `structured_output.choice` label's
log-probability, in the spec's order, as constraints/__init__.py `choice_json` reads them; -inf where a
label cannot fit) when the constraint is a choice, and `generations` (int64: how many times the sample was
generated, 1 + its regenerations after `structured_output.validator` rejections, pipeline/validators.py; 0
for a row that never reached the model) when a validator is set. n output rows per input row (one per
sample, error rows included, so every (id, sample_index) is there exactly once), in (input order,
sample_index) order.
`id` takes the id column's type when `input.id_column` is set (pipeline.rows.output_ids), else string.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipeline.redact import scrub
from pipeline.rows import PreparedRow

STATUSES = ("ok", "invalid", "error")

_FIXED: list[tuple[str, pa.DataType]] = [
    ("status", pa.string()), ("text", pa.string()), ("error", pa.string()), ("num_tokens", pa.int64()),
    ("canvases", pa.int64()), ("denoising_steps", pa.int64()), ("tokens_per_forward", pa.float64()),
    ("seed", pa.int64()), ("attempt", pa.int64()), ("latency_s", pa.float64()), ("sample_index", pa.int32()),
]
LOGPROBS_TYPE = pa.list_(pa.float32())
RESERVED_COLUMNS = ("id", *(n for n, _ in _FIXED), "json", "logprobs", "choice_scores", "generations")


@dataclass
class RowResult:
    """What generation made of one row (the backend's answer); error rows carry only `error`."""

    status: str = "ok"
    text: str | None = None
    error: str | None = None
    num_tokens: int = 0
    canvases: int = 0
    denoising_steps: int = 0
    tokens_per_forward: float = 0.0
    latency_s: float = 0.0
    json: str | None = None
    logprobs: list[float] | None = None  # generation.logprobs: one per generated token
    choice_scores: list[float] | None = None  # generation.logprobs with a choice: one per label
    generations: int = 1  # times generated (structured_output.validator regenerates rejected samples)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


def output_schema(passthrough: pa.Schema, structured: bool, id_type: pa.DataType | None = None,
                  logprobs: bool = False, choice_scores: bool = False, generations: bool = False
                  ) -> pa.Schema:
    fields = [pa.field("id", id_type or pa.string()), *passthrough, *(pa.field(n, t) for n, t in _FIXED)]
    if structured:
        fields.append(pa.field("json", pa.string()))
    if logprobs:
        fields.append(pa.field("logprobs", LOGPROBS_TYPE))
    if choice_scores:
        fields.append(pa.field("choice_scores", LOGPROBS_TYPE))
    if generations:
        fields.append(pa.field("generations", pa.int64()))
    return pa.schema(fields)


def build_table(rows: list[PreparedRow], results: list[RowResult], passthrough: pa.Table, *,
                attempt: int | list[int], structured: bool, ids: pa.Array | None = None,
                logprobs: bool = False, choice_scores: bool = False, generations: bool = False) -> pa.Table:
    """The output table for `rows` (with `results[i]` for `rows[i]`); `passthrough` has the same rows.

    `ids` is the typed `id` column (pipeline.rows.output_ids); without it, the rows' ids as strings.
    """
    if ids is None:
        ids = pa.array([p.id for p in rows], pa.string())
    if len(rows) != len(results) or passthrough.num_rows != len(rows) or len(ids) != len(rows):
        raise ValueError(f"row count mismatch: {len(rows)} rows, {len(results)} results, "
                         f"{passthrough.num_rows} passthrough rows, {len(ids)} ids")
    attempts = attempt if isinstance(attempt, list) else [attempt] * len(rows)
    cols: dict[str, list] = {
        "status": [r.status for r in results], "text": [r.text for r in results],
        # error messages quote exceptions, which may quote URLs or headers: never a secret in the output
        "error": [scrub(r.error) if r.error else r.error for r in results],
        "num_tokens": [r.num_tokens for r in results],
        "canvases": [r.canvases for r in results], "denoising_steps": [r.denoising_steps for r in results],
        "tokens_per_forward": [float(r.tokens_per_forward) for r in results],
        "seed": [p.seed for p in rows], "attempt": attempts, "latency_s": [r.latency_s for r in results],
        "sample_index": [p.sample for p in rows],
    }
    schema = output_schema(passthrough.schema, structured, ids.type, logprobs, choice_scores, generations)
    arrays = [ids, *passthrough.columns]
    arrays += [pa.array(cols[n], t) for n, t in _FIXED]
    if structured:
        arrays.append(pa.array([r.json for r in results], pa.string()))
    if logprobs:
        arrays.append(pa.array([r.logprobs for r in results], LOGPROBS_TYPE))
    if choice_scores:
        arrays.append(pa.array([r.choice_scores for r in results], LOGPROBS_TYPE))
    if generations:
        arrays.append(pa.array([r.generations for r in results], pa.int64()))
    return pa.Table.from_arrays(arrays, schema=schema)


def error_result(message: str) -> RowResult:
    return RowResult(status="error", error=message, generations=0)  # never reached the model
