"""The output row: its columns, their Arrow types, and building a shard's output table.

Columns, in order: `id`, the passthrough columns (input types kept), `status` ("ok" | "invalid" |
"error"), `text`, `error` (message for non-ok rows), `num_tokens`, `canvases`, `denoising_steps`,
`tokens_per_forward`, `seed`, `attempt`, `latency_s` (seconds of engine time the row's batch took, shared
equally by its rows), then `json` when structured output is on. One output row per input row, in input order.
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
    ("seed", pa.int64()), ("attempt", pa.int64()), ("latency_s", pa.float64()),
]
RESERVED_COLUMNS = ("id", *(n for n, _ in _FIXED), "json")


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

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


def output_schema(passthrough: pa.Schema, structured: bool, id_type: pa.DataType | None = None) -> pa.Schema:
    fields = [pa.field("id", id_type or pa.string()), *passthrough, *(pa.field(n, t) for n, t in _FIXED)]
    if structured:
        fields.append(pa.field("json", pa.string()))
    return pa.schema(fields)


def build_table(rows: list[PreparedRow], results: list[RowResult], passthrough: pa.Table, *,
                attempt: int | list[int], structured: bool, ids: pa.Array | None = None) -> pa.Table:
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
    }
    schema = output_schema(passthrough.schema, structured, ids.type)
    arrays = [ids, *passthrough.columns]
    arrays += [pa.array(cols[n], t) for n, t in _FIXED]
    if structured:
        arrays.append(pa.array([r.json for r in results], pa.string()))
    return pa.Table.from_arrays(arrays, schema=schema)


def error_result(message: str) -> RowResult:
    return RowResult(status="error", error=message)
