"""Structured output for block-diffusion generation: outputs that always validate.

A `structured_output` section holds exactly one of:
    json_schema: {...}            a JSON Schema object
    pydantic: "module:ClassName"  a pydantic model (its JSON Schema is compiled; the model validates)
    regex: "..."                  the whole output must fully match (Rust regex syntax, leftmost-first)
    choice: ["a", "b", ...]       the output is exactly one label; a score per label is kept
    schema_column: "col"          a column holding each row's JSON Schema (object or JSON string)

Public entry points (all raise ValueError subclasses with a clear message on bad input):

    build_hook(section, tokenizer, eos_or_config, *, max_new_tokens, canvas_length, row=None,
               pad_token_id=None, config=None, cache=None) -> ConstraintHook
        Compiles and returns the engine CommitHook (engine/fast.py `Request.commit_hook`).
        `tokenizer` is a tokenizers.Tokenizer or a wrapper holding one (.tk/.tokenizer/.backend).
        `eos_or_config` is the model config (model/config.py: EOS ids, canvas length and the pad id come
        from it) or the EOS ids themselves (then pass pad_token_id).
        Raises UnsupportedSchema("unsupported: <keyword> ...") and InfeasibleConstraint (too short a budget).
    check_feasible(section, tokenizer, eos_or_config, *, max_new_tokens, row=None, config=None, cache=None)
        -> int: the minimum number of new tokens the constraint needs; raises InfeasibleConstraint naming it
        when it exceeds max_new_tokens. Call before work starts.
    validate_output(section, text, row=None) -> (ok, parsed_json | None, error | None)
        Independent post-generation check (jsonschema with formats / pydantic / re.fullmatch / label).
    check_output(section, text, completion=None, row=None) -> (status, json column, error)
        The pipeline's per-row verdict. The json column holds the validated object for schema kinds and
        {"label": ..., "scores": {label: log-probability}} for choice (None for regex).
    decode_text(hook, token_ids) -> str
        Exact text of the committed tokens (byte-exact, whatever the tokenizer's decoder would strip).

The final ConstraintState (Completion.hook_state) carries `label_scores` and `chosen` for choice.
`cache` is a ConstraintCache (constraints/cache.py): the bounded in-memory automata and vocabularies a replica
owns and passes to every call; without one, a call compiles (or reads the disk cache) and keeps nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Protocol

from constraints.cache import CacheConfig, ConstraintCache
from constraints.choice import LabelScorer
from constraints.compile import CompileConfig, CompileError, compile_regex, section_regex
from constraints.dfa import TokenDFA
from constraints.hook import ConstraintHook, ConstraintState, InfeasibleConstraint, require_budget
from constraints.output_check import section_kind, validate_output
from constraints.schema_regex import UnsupportedSchema
from constraints.steering import SteeringOptions
from constraints.vocab_bytes import decode_bytes, token_bytes, vocab_hash

__all__ = [
    "CacheConfig",
    "CompileConfig",
    "CompileError",
    "ConstraintCache",
    "ConstraintHook",
    "ConstraintState",
    "InfeasibleConstraint",
    "UnsupportedSchema",
    "build_hook",
    "check_feasible",
    "choice_json",
    "decode_text",
    "validate_output",
]


class _PadIds(Protocol):
    pad_token_id: int | None


class ModelConfig(Protocol):
    """What this package reads of a model config (model/config.py DiffusionGemmaConfig)."""

    eos_token_ids: tuple[int, ...]
    canvas_length: int
    generation: _PadIds  # generation_config.json: its pad_token_id wins
    text: _PadIds  # config.json's text_config: the checkpoint's pad token otherwise


def _special_ids(
    eos_or_config: ModelConfig | Iterable[int] | int, canvas_length: int | None, pad_token_id: int | None
) -> tuple[list[int], int | None, int | None]:
    """(EOS ids, canvas length, pad id) from the model config, or from EOS ids and the explicit arguments."""
    if isinstance(eos_or_config, int):
        return [eos_or_config], canvas_length, pad_token_id
    if isinstance(eos_or_config, Iterable):
        return [int(e) for e in eos_or_config], canvas_length, pad_token_id
    cfg = eos_or_config
    if pad_token_id is None:
        pad_token_id = cfg.generation.pad_token_id
        if pad_token_id is None:
            pad_token_id = cfg.text.pad_token_id
    return [int(e) for e in cfg.eos_token_ids], canvas_length or cfg.canvas_length, pad_token_id


_KINDS = ("json_schema", "pydantic", "regex", "choice", "schema_column")


def as_section(section) -> dict:
    """A plain dict section from a dict or a spec object (pipeline.spec.StructuredOutputSpec)."""
    if isinstance(section, dict):
        d = dict(section)
    else:
        d = {
            k: getattr(section, k)
            for k in (*_KINDS, "compile_timeout_s", "steering", "ref_depth")
            if getattr(section, k, None) is not None
        }
    js = d.get("json_schema")
    if isinstance(js, str):  # a JSON string, or a path/URL to one
        try:
            d["json_schema"] = json.loads(js)
        except json.JSONDecodeError:
            import fsspec

            with fsspec.open(js, "r") as f:
                d["json_schema"] = json.load(f)
    return d


def _row_dict(row) -> dict | None:
    if row is None or isinstance(row, dict):
        return row
    extra = getattr(row, "extra", None)
    return dict(extra) if extra else {}


def _config(section: dict, config: CompileConfig | None) -> CompileConfig | None:
    if config is None and "compile_timeout_s" in section:
        return CompileConfig(timeout_s=float(section["compile_timeout_s"]))
    return config


def _compile(section: dict, tokenizer, eos_ids: list[int], row, config, cache: ConstraintCache) -> TokenDFA:
    regex, _ = section_regex(section, row)
    return cache.automaton(regex, cache.vocabulary(tokenizer), eos_ids, config)


def check_feasible(
    section,
    tokenizer,
    eos_or_config,
    *,
    max_new_tokens: int,
    row=None,
    config: CompileConfig | None = None,
    cache: ConstraintCache | None = None,
) -> int:
    """Minimum new tokens the constraint needs; InfeasibleConstraint if it exceeds max_new_tokens."""
    section, row = as_section(section), _row_dict(row)
    eos, _, _ = _special_ids(eos_or_config, None, None)
    dfa = _compile(section, tokenizer, eos, row, _config(section, config), cache or ConstraintCache())
    return require_budget(dfa, max_new_tokens, f"structured_output ({section_kind(section)})")


def build_hook(
    section,
    tokenizer,
    eos_or_config,
    *,
    max_new_tokens: int | None = None,
    canvas_length: int | None = None,
    row=None,
    pad_token_id: int | None = None,
    config: CompileConfig | None = None,
    cache: ConstraintCache | None = None,
) -> ConstraintHook:
    """The CommitHook enforcing `section` (see the module docstring).

    Without max_new_tokens the length check is skipped (pass it: the job should fail before work starts).
    The check runs once, in ConstraintHook on the compiled automaton (hook.require_budget).
    """
    section, row = as_section(section), _row_dict(row)
    eos, canvas_length, pad = _special_ids(eos_or_config, canvas_length, pad_token_id)
    if not eos:
        raise ValueError("structured_output needs the checkpoint's EOS token ids")
    if pad is None:
        raise ValueError("structured_output needs the pad token id: pass the model config or pad_token_id")
    cache = cache or ConstraintCache()
    dfa = _compile(section, tokenizer, eos, row, _config(section, config), cache)
    vocab = cache.vocabulary(tokenizer).tokens
    scorer = LabelScorer(section["choice"], vocab, eos) if section_kind(section) == "choice" else None
    return ConstraintHook(
        dfa,
        pad_token_id=pad,
        max_new_tokens=max_new_tokens,
        canvas_length=canvas_length,
        scorer=scorer,
        description=f"structured_output ({section_kind(section)})",
        vocab=vocab,
        steering=SteeringOptions.parse(section.get("steering") or "off"),
    )


def decode_text(hook: ConstraintHook, token_ids) -> str:
    """Exact text of constrained tokens (EOS/pad/special tokens contribute nothing)."""
    return decode_bytes(hook.vocab, token_ids).decode("utf-8")


def check_output(section, text: str, completion=None, row=None) -> tuple[str, str | None, str | None]:
    """(status "ok" | "invalid", json text or None, error) for a finished row (pipeline adapter).

    An invalid constrained row is a bug in this package; the message says so.
    """
    section, row = as_section(section), _row_dict(row)
    if completion is not None and getattr(completion, "finish_reason", None) == "error":
        return "error", None, getattr(completion, "error", None)
    ok, parsed, err = validate_output(section, text, row)
    if not ok:
        return "invalid", None, f"constrained output failed validation (a bug): {err}"
    kind = section_kind(section)
    if kind in ("json_schema", "pydantic", "schema_column"):
        return "ok", json.dumps(parsed, ensure_ascii=False), None
    if kind == "choice":
        return "ok", choice_json(text, getattr(completion, "hook_state", None)), None
    return "ok", None, None


def choice_json(label: str, state) -> str:
    """The `json` column of a choice row: {"label": ..., "scores": {label: log-probability or null}}.

    Scores come from the row's first canvas (ConstraintState.label_scores); null marks a label that cannot
    fit there (-inf is not JSON). Without a state (a row not generated under the hook) scores is null.
    """
    scores = getattr(state, "label_scores", None)
    out = None
    if scores is not None:
        out = {k: (None if v == float("-inf") else float(v)) for k, v in scores.items()}
    return json.dumps({"label": label, "scores": out}, ensure_ascii=False)


# re-exported for callers that want the pieces
__all__ += [
    "LabelScorer",
    "as_section",
    "check_output",
    "compile_regex",
    "section_regex",
    "token_bytes",
    "vocab_hash",
]
