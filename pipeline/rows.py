"""Input rows to prompts: the prompt text, the row id, the per-row seed, and bad rows as typed failures.

A row id is the `input.id_column` value when set, else `<file relative to input root>#<row index>`, which
is stable across runs and retries. The seed is a hash of (job seed, row id as text), so a retried or
bisected row reproduces exactly what the first attempt would have produced. A row whose prompt is null,
empty, undecodable, whose template needs a null value, or whose cells the Parquet reader could not decode
(`unreadable`, from pipeline.shards) becomes a `PreparedRow` with `error` set: it is written as an error
row, it never reaches the model and never fails its shard.

The output `id` column keeps the id column's Arrow type (`output_ids`): int64 ids stay int64. A text id
column holds the derived `file#row` id where an id is null or unreadable; any other type cannot, so the id
is null there and the row's error message names its `<file> row <n>` position.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.spec import InputSpec


@dataclass
class PreparedRow:
    index: int  # position within the shard's table
    id: str
    seed: int
    prompt: str | None  # None when error is set
    error: str | None = None
    extra: dict[str, Any] | None = None  # per-row inputs for hooks (e.g. a schema_column value)


def row_seed(job_seed: int, row_id: str) -> int:
    """A 63-bit seed from the job seed and the row id (fits int64 and torch.Generator.manual_seed)."""
    digest = hashlib.blake2b(f"{job_seed}\x1f{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def derived_id(file_rel: str, row_index: int) -> str:
    return f"{file_rel}#{row_index}"


def _as_text(value: Any, what: str) -> tuple[str | None, str | None]:
    """(text, error) for one cell: decodes bytes as UTF-8, refuses null and blank."""
    if value is None:
        return None, f"{what} is null"
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    if not isinstance(value, str):
        value = str(value)
    if "\x00" in value:
        return None, f"{what} contains a NUL character"
    return value, None


def prepare_rows(table: pa.Table, spec: InputSpec, *, job_seed: int, file_rel: str, first_row: int,
                 extra_columns: tuple[str, ...] = (), unreadable: dict[int, str] | None = None
                 ) -> list[PreparedRow]:
    """One PreparedRow per table row, in order. `first_row` is the table's first row index in its file.

    `unreadable` maps a table row to why its cells could not be read (pipeline.shards.ShardRead): such a
    row is an error row whose id comes from the id column if that cell was read, else is derived.
    """
    cols = {name: table.column(name).to_pylist() for name in set(spec.template_columns())
            | ({spec.id_column} if spec.id_column else set()) | set(extra_columns)}
    out: list[PreparedRow] = []
    id_col = cols[spec.id_column] if spec.id_column else None
    prompt_col = cols[spec.prompt_column] if spec.prompt_column is not None else None
    prompt_what = f"prompt column {spec.prompt_column!r}"
    for i in range(table.num_rows):
        error = None  # the "<file> row <n>: " prefix is added only to rows that fail (most rows do not)
        if id_col is not None:
            raw_id = id_col[i]
            if raw_id is None:
                rid = derived_id(file_rel, first_row + i)
                error = f"id column {spec.id_column!r} is null"
            else:
                rid = raw_id.decode("utf-8", "replace") if isinstance(raw_id, bytes) else str(raw_id)
        else:
            rid = derived_id(file_rel, first_row + i)
        if unreadable and i in unreadable:
            error = f"unreadable input: {unreadable[i]}"
        prompt = None
        if error is None:
            if prompt_col is not None:
                value = prompt_col[i]
                # The common case (a clean str) skips _as_text's checks but one.
                if type(value) is str and "\x00" not in value:
                    prompt, err = value, None
                else:
                    prompt, err = _as_text(value, prompt_what)
            else:
                values, err = {}, None
                for c in spec.template_columns():
                    values[c], err = _as_text(cols[c][i], f"template column {c!r}")
                    if err:
                        break
                if err is None:
                    try:
                        prompt = spec.template.format_map(values)
                    except (KeyError, IndexError, ValueError, AttributeError) as exc:
                        err = f"template cannot be filled: {type(exc).__name__}: {exc}"
            if err is None and prompt is not None and not prompt.strip():
                err = "prompt is empty"
            if err:
                error, prompt = err, None
        if error is not None:
            error = f"{file_rel} row {first_row + i}: {error}"
        extra = {c: cols[c][i] for c in extra_columns} if extra_columns else None
        out.append(PreparedRow(i, rid, row_seed(job_seed, rid), prompt, error, extra))
    return out


_TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)


def output_ids(table: pa.Table, spec: InputSpec, rows: list[PreparedRow]) -> pa.Array:
    """The output `id` column for `rows` (prepared from `table`), typed as the id column (module docstring).

    Without `input.id_column` the ids are the derived `file#row` strings.
    """
    if not spec.id_column:
        return pa.array([r.id for r in rows], pa.string())
    col = table.column(spec.id_column).combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if any(is_text(col.type) for is_text in _TEXT_TYPES):
        # The column's own values where present (binary ids keep their bytes), else the derived id.
        return pc.coalesce(col, pa.array([r.id for r in rows], pa.string()).cast(col.type))
    return col
