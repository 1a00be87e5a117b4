"""Checks that need the world, run before any generation: inputs, columns, output prefix, model, constraints.

`validate_job` is what `dgbatch validate` runs and what `run_job` runs first, so a corrupt Parquet file, a
CSV file without a header, a missing column or one of a type the spec cannot read (a messages column that
is not a list of structs or text, a settings column that is not numbers or text), an unreachable bucket,
an output prefix that overlaps the input, holds files that are not ours or holds a different job
(pipeline/prefix.py, pipeline/plan.py), a bad model path, an unsupported schema keyword or a constraint
that cannot finish within max_new_tokens fails the job before a replica starts, with a `SpecError` naming
the file, column, URL, path, keyword or minimum length. Whatever `run_job` refuses before work, this
refuses first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.plan import existing_plan, fingerprint_components
from pipeline.prefix import check_output_prefix
from pipeline.shards import InputFile, list_inputs, plan_shards, read_file
from pipeline.spec import JobSpec, SpecError
from pipeline.storage import Storage


@dataclass
class Validated:
    files: list[InputFile]
    rows: int
    shards: int
    output: Storage
    identity: dict[str, Any]  # what the plan fingerprint knows of the model (or the backend)
    min_new_tokens: int | None = None  # the constraint's minimum output length (shared constraints only)
    resumes: bool = False  # the prefix already holds this job's plan: a run resumes it


def required_columns(spec: JobSpec) -> dict[str, str]:
    """column -> the spec field that needs it."""
    need: dict[str, str] = {}
    inp = spec.input
    if inp.prompt_column:
        need[inp.prompt_column] = "input.prompt_column"
    for c in inp.template_columns() if inp.template else []:
        need.setdefault(c, "input.template")
    if inp.messages_column:
        need.setdefault(inp.messages_column, "input.messages_column")
    if inp.format == "openai-batch":
        need.setdefault("body", "input.format openai-batch")  # method and url may be left out
    if inp.id_column:
        need.setdefault(inp.id_column, "input.id_column")
    for name, c in inp.generation_columns.items():
        need.setdefault(c, f"input.generation_columns.{name}")
    if inp.sampling_params_column:
        need.setdefault(inp.sampling_params_column, "input.sampling_params_column")
    for c in spec.output.passthrough_columns:
        need.setdefault(c, "output.passthrough_columns")
    if spec.structured_output and spec.structured_output.schema_column:
        need.setdefault(spec.structured_output.schema_column, "structured_output.schema_column")
    return need


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or \
        pa.types.is_large_binary(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _column_type_problem(spec: JobSpec, col: str, t: pa.DataType) -> str | None:
    """Why column `col` of type `t` cannot be what the spec reads it as (conversation, settings), or None.
    Only the type is checked here: a bad value in a usable column is that row's error."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):  # every cell null: each row keeps the job's value, or is an error row
        return None
    inp = spec.input
    if col == inp.messages_column and not (_is_text(t) or (_is_list(t) and pa.types.is_struct(t.value_type))):
        return "a conversation: a list of {role, content} structs, or its JSON text"
    if col == inp.sampling_params_column and not (_is_text(t) or pa.types.is_struct(t)):
        return "settings: a struct like {temperature, max_tokens, seed}, or its JSON text"
    if col in inp.generation_columns.values() and not (
            pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or _is_text(t)):
        return "a number (or text holding one)"
    return None


def check_columns(spec: JobSpec, files: list[InputFile]) -> None:
    need = required_columns(spec)
    for f in files:
        names = f.schema.names  # read with the footer at listing
        for col, field in need.items():
            if col not in names:
                raise SpecError(f"input file {f.path}: missing column {col!r} (needed by {field}); "
                                f"columns are {names}")
            t = f.schema.field(col).type
            why = _column_type_problem(spec, col, t)
            if why:
                raise SpecError(f"input file {f.path}: column {col!r} (needed by {field}) is {t}, not {why}")


def check_unique_ids(spec: JobSpec, files: list[InputFile]) -> None:
    """With input.id_column, ids must be unique across all files (exactly-once is defined on them).

    An id the reader cannot decode (a corrupt row group) is skipped like a null one: its row becomes an
    error row at run time (pipeline.shards.read_shard, pipeline.rows).
    """
    col, st, seen = spec.input.id_column, spec.storage, {}
    for f in files:
        ids = read_file(f, [col], st.endpoint_url, st.options).table
        values = pc.cast(ids.column(col), "string").to_pylist()
        for i, v in enumerate(values):
            if v is None:
                continue  # a null or unreadable id becomes an error row (pipeline.rows)
            if v in seen:
                raise SpecError(f"input.id_column {col!r}: id {v!r} appears twice ({seen[v]} and "
                                f"{f.path} row {i}); ids must be unique")
            seen[v] = f"{f.path} row {i}"


def validate_job(spec: JobSpec, *, check_model: bool = True, identity: dict[str, Any] | None = None
                 ) -> Validated:
    """Every check that needs the world, in the order a user would fix them. `identity` is the backend's
    part of the plan fingerprint (None: the engine's model, pipeline.model_path.model_identity)."""
    st = spec.storage
    files = list_inputs(spec.input.path, st.endpoint_url, st.options, spec.input.format)
    check_columns(spec, files)
    if spec.input.id_column:
        check_unique_ids(spec, files)
    output = Storage(spec.output.path, st.endpoint_url, st.options)
    check_output_prefix(output, spec.input.path, files, st.endpoint_url, st.options)
    if check_model:
        from pipeline.model_path import check_model_path

        check_model_path(spec.model)
    if identity is None:
        from pipeline.model_path import model_identity

        identity = model_identity(spec.model)
    resumes = existing_plan(output, fingerprint_components(spec, files, identity)) is not None
    output.check_writable()
    min_tokens = None
    if spec.structured_output is not None and check_model:  # stub backends generate no constrained text
        min_tokens = check_structured_output(spec)
    n_shards = len(plan_shards(files, spec.resources.shard_rows))
    return Validated(files, sum(f.num_rows for f in files), n_shards, output, identity, min_tokens, resumes)


def check_structured_output(spec: JobSpec) -> int | None:
    """Compile the job's constraint against the model's tokenizer and EOS ids, exactly as a replica will.

    Returns the fewest new tokens the constraint needs (None for a per-row `schema_column`, whose schemas
    are checked row by row: a bad one is that row's error, never the job's). Raises SpecError naming the
    unsupported keyword, or the minimum length when it exceeds the engine's max_new_tokens. The compiled
    automaton lands in the on-disk constraint cache, so replicas start from it. This is the job's one
    feasibility check before work; each replica checks its own hook once more when it builds it.
    """
    section = spec.structured_output
    if section is None or section.schema_column is not None:
        return None
    from constraints import check_feasible  # loads torch: only for jobs with structured output

    tokenizer, model_config, max_new_tokens = _constraint_model(spec)
    try:
        return check_feasible(section, tokenizer, model_config, max_new_tokens=max_new_tokens)
    except Exception as exc:  # noqa: BLE001 - every refusal becomes one clear spec error
        sources = {"json_schema": section.json_schema, "pydantic": section.pydantic, "regex": section.regex,
                   "choice": section.choice}
        kind = next(k for k, v in sources.items() if v)
        msg = str(exc)
        prefix = "" if msg.startswith("structured_output") else f"structured_output.{kind}: "
        raise SpecError(f"{prefix}{msg}") from exc


def _constraint_model(spec: JobSpec):
    """(tokenizer, model config, max_new_tokens as the engine will use it) without loading the weights."""
    from engine.params import GenerationParams
    from model import DiffusionGemmaConfig, load_tokenizer
    from pipeline.model_path import FALLBACK_LABEL, ensure_fallback, resolve_model_path

    path, label = resolve_model_path(spec.model)
    if label == FALLBACK_LABEL:
        path = str(ensure_fallback())  # the replicas would build it first thing anyway
    try:
        config = DiffusionGemmaConfig.from_dir(path)
        tokenizer = load_tokenizer(path)
    except Exception as exc:  # noqa: BLE001
        raise SpecError(f"model.path {path}: cannot read config/tokenizer: "
                        f"{type(exc).__name__}: {exc}") from exc
    # the same budget the replica's backend hands to build_hook (the checkpoint's default unless overridden)
    params = GenerationParams.from_defaults(config.generation, **spec.generation.engine_overrides())
    return tokenizer, config, int(params.max_new_tokens)
