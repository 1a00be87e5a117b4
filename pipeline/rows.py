"""Input rows to prompts: the prompt text or conversation, the row id, the per-row seed and settings, and
bad rows as typed failures.

The prompt comes from `input.prompt_column`, `input.template` or `input.messages_column` (a conversation:
pipeline/conversation.py), or from an openai-batch line (pipeline/openai_batch.py); `check_recipe` holds
the rules that tie the input fields together and `row_columns` says what a row reads. `input.system` opens
every chat row's conversation that has no system turn. Per-row settings (pipeline/row_settings.py) come
from `input.generation_columns`, `input.sampling_params_column` or an openai-batch body; a row's own
`seed` replaces its derived seed. `input.template_values` ("module:function", pipeline/user_code.py) maps
a template row's values (column -> text) before the template is filled, e.g. a puzzle's `.` cells to `0`.
A malformed conversation or a bad setting makes an error row naming the
row and the problem, like every other bad row below.

A row id is the `input.id_column` value when set, else `<file relative to input root>#<row index>`, which
is stable across runs and retries. The seed (unless the row sets its own) is a hash of (job seed, row id
as text), so a retried or bisected row reproduces exactly what the first attempt would have produced. A
row whose prompt is null, empty, undecodable, whose template needs a null value, or whose cells the reader
could not decode (`unreadable`, from pipeline.shards: a corrupt Parquet page, a JSONL line that is not
JSON) becomes a `PreparedRow` with `error` set: it is written as an error
row, it never reaches the model and never fails its shard.

The output `id` column keeps the id column's Arrow type (`output_ids`): int64 ids stay int64. A text id
column holds the derived `file#row` id where an id is null or unreadable; any other type cannot, so the id
is null there and the row's error message names its `<file> row <n>` position.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.conversation import decoded_cell, parse_messages, with_system
from pipeline.openai_batch import COLUMNS as OPENAI_COLUMNS
from pipeline.openai_batch import request as openai_request
from pipeline.row_settings import from_mapping, resolve, settings_problem
from pipeline.spec import InputSpec
from pipeline.user_code import load_callable


@dataclass
class PreparedRow:
    index: int  # position within the shard's table
    id: str
    seed: int
    prompt: str | None  # None when error is set, and for a conversation
    error: str | None = None
    extra: dict[str, Any] | None = None  # per-row inputs for hooks (e.g. a schema_column value)
    messages: list[dict[str, str]] | None = None  # the conversation to render (None: `prompt` alone)
    settings: dict[str, Any] | None = None  # engine parameter -> value for this row, `temperature` unmapped
    sample: int = 0  # which of the row's `generation.n` samples (its seed is `sample_seed(row seed, sample)`)


def check_recipe(inp: InputSpec) -> None:
    """Raise ValueError naming the field when the input fields do not make one recipe (InputSpec's check):
    exactly one prompt source (none for openai-batch, whose id is custom_id), conversations only with
    chat, known per-row setting names."""
    given = [n for n in ("prompt_column", "template", "messages_column") if getattr(inp, n) is not None]
    if inp.format == "openai-batch":
        if given:
            raise ValueError("input: format openai-batch takes each line's body.messages as the prompt; "
                             f"leave {', '.join(given)} unset")
        if inp.id_column != "custom_id":
            raise ValueError("input.id_column: openai-batch rows are identified by custom_id")
    elif len(given) != 1:
        raise ValueError(f"input: set exactly one of prompt_column or template or messages_column (got "
                         f"{given or 'none'})")
    if not inp.chat and (inp.messages_column or inp.system is not None or inp.format == "openai-batch"):
        raise ValueError("input.chat: conversations (messages_column, system, openai-batch) are rendered by "
                         "the chat template; chat cannot be false")
    inp.template_columns()  # raises on a malformed template
    if inp.template_values is not None and inp.template is None:
        raise ValueError("input.template_values: maps the values of input.template; set a template")
    why = settings_problem(list(inp.generation_columns)) if inp.generation_columns else None
    if why:
        raise ValueError(f"input.generation_columns: {why}")


def row_columns(inp: InputSpec) -> list[str]:
    """Every column a row's recipe reads, each once: the prompt's first (prompt or template columns, the
    messages column, or openai-batch's), then the id and the settings columns."""
    cols = list(OPENAI_COLUMNS) if inp.format == "openai-batch" else (
        [inp.messages_column] if inp.messages_column else inp.template_columns())
    for c in ([inp.id_column] if inp.id_column else []) + list(inp.generation_columns.values()) + \
            ([inp.sampling_params_column] if inp.sampling_params_column else []):
        if c not in cols:
            cols.append(c)
    return cols


def row_seed(job_seed: int, row_id: str) -> int:
    """A 63-bit seed from the job seed and the row id (fits int64 and torch.Generator.manual_seed)."""
    digest = hashlib.blake2b(f"{job_seed}\x1f{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def sample_seed(seed: int, sample: int) -> int:
    """Sample `sample`'s seed from its row's: sample 0 keeps the row seed (so n = 1 is unchanged), the others
    hash (row seed, sample), so a retried or resumed row reproduces every sample."""
    if sample == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}\x1fsample\x1f{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def samples(rows: list[PreparedRow], n: int) -> list[PreparedRow]:
    """Each row as its n samples, in (row order, sample) order; a bad row's samples carry its error."""
    if n == 1:
        return rows
    return [replace(r, seed=sample_seed(r.seed, k), sample=k) for r in rows for k in range(n)]


def derived_id(file_rel: str, row_index: int) -> str:
    return f"{file_rel}#{row_index}"


def _as_text(value: Any, what: str) -> tuple[str | None, str | None]:
    """(text, error) for one cell: decodes bytes as UTF-8, refuses null and blank."""
    value, problem = decoded_cell(value, what)
    if problem is not None:
        return None, problem
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
    cols = {name: table.column(name).to_pylist() for name in set(row_columns(spec)) | set(extra_columns)}
    out: list[PreparedRow] = []
    id_col = cols[spec.id_column] if spec.id_column else None
    per_row = bool(spec.generation_columns or spec.sampling_params_column or spec.format == "openai-batch")
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
        prompt = messages = settings = seed = None
        if error is None:
            prompt, messages, given, error = _prompt(spec, cols, i)
            if error is None and per_row:
                settings, seed, error = _settings(spec, cols, i, given)
            if error is None and spec.system is not None and spec.chat:
                messages = with_system(messages or [{"role": "user", "content": prompt}], spec.system)
            if error is not None:
                prompt = messages = settings = seed = None
        if error is not None:
            error = f"{file_rel} row {first_row + i}: {error}"
        extra = {c: cols[c][i] for c in extra_columns} if extra_columns else None
        seed = row_seed(job_seed, rid) if seed is None else seed
        out.append(PreparedRow(i, rid, seed, prompt, error, extra, messages, settings or None))
    return out


def _prompt(spec: InputSpec, cols: dict[str, list], i: int
            ) -> tuple[str | None, list[dict[str, str]] | None, dict[str, tuple[str, Any]], str | None]:
    """(prompt text, conversation, settings an openai-batch body gives, error) of row i."""
    if spec.format == "openai-batch":
        turns, given, err = openai_request(cols["method"][i], cols["url"][i], cols["body"][i])
        return None, turns, given, err
    if spec.messages_column is not None:
        turns, err = parse_messages(cols[spec.messages_column][i], spec.messages_column)
        return None, turns, {}, err
    if spec.prompt_column is not None:
        value = cols[spec.prompt_column][i]
        # The common case (a clean str) skips _as_text's checks but one.
        if type(value) is str and "\x00" not in value:
            prompt, err = value, None
        else:
            prompt, err = _as_text(value, f"prompt column {spec.prompt_column!r}")
    else:
        values, err, prompt = {}, None, None
        for c in spec.template_columns():
            values[c], err = _as_text(cols[c][i], f"template column {c!r}")
            if err:
                break
        if err is None and spec.template_values is not None:
            values, err = _mapped_values(spec.template_values, values)
        if err is None:
            try:
                prompt = spec.template.format_map(values)
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                err = f"template cannot be filled: {type(exc).__name__}: {exc}"
    if err is None and not prompt.strip():
        err = "prompt is empty"
    return (None, None, {}, err) if err else (prompt, None, {}, None)


def _mapped_values(name: str, values: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """`input.template_values`: the user's fn(values) -> dict of the values to fill the template with (the
    keys it returns replace or add to the row's). What it raises or a non-dict return is the row's error."""
    try:
        got = load_callable(name)(dict(values))
    except Exception as exc:  # noqa: BLE001 - user code fails one row, never the job
        return values, f"input.template_values {name!r} raised {type(exc).__name__}: {exc}"
    if not isinstance(got, dict) or not all(isinstance(v, str) for v in got.values()):
        return values, f"input.template_values {name!r} returned {type(got).__name__}, not a dict of str"
    return {**values, **got}, None


def _settings(spec: InputSpec, cols: dict[str, list], i: int, given: dict[str, tuple[str, Any]]
              ) -> tuple[dict[str, Any] | None, int | None, str | None]:
    """(engine overrides, own seed, error) of row i from its settings columns and `given` (its body's)."""
    given = dict(given)
    for name, col in spec.generation_columns.items():
        v = cols[col][i]
        if v is not None:
            if name in given:
                return None, None, f"{name} set twice ({given[name][0]} and column {col!r})"
            given[name] = (f"column {col!r}", v)
    col = spec.sampling_params_column
    if col is not None and cols[col][i] is not None:
        more, err = from_mapping(cols[col][i], col)
        if err:
            return None, None, err
        for name, got in more.items():
            if name in given:
                return None, None, f"{name} set twice ({given[name][0]} and {got[0]})"
            given[name] = got
    return resolve(given)


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
