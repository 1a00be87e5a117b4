"""Per-row generation settings: which names a row may set, where they come from, and each value's check.

Owns the names (`setting_names`): `temperature`, `max_tokens` (or `max_completion_tokens`, OpenAI's newer
name), `seed` and `stop` (a string or a list of them: the row's stop strings, replacing the job's
`generation.stop`), as OpenAI and vLLM spell them, plus the engine's own parameters (engine/params.py
`SAMPLER_BOUNDS`: max_new_tokens, max_denoising_steps, t_max, t_min, ...). A row's settings come from
`input.generation_columns` (setting -> column), from a `sampling_params` object (a Parquet struct, a dict,
or JSON object text, as Ray Data LLM writes vLLM's SamplingParams: `from_mapping`) and, in openai-batch,
from the request body. `resolve` checks them, so that a bad value is that row's error, naming where it came
from and what is wrong; null means "not set here" (the job's value holds).

What a value may be: a number (a whole float such as 64.0, which pandas writes for an int column with
nulls, counts as an int), or text holding one (a CSV cell; a JSONL column whose values mix kinds is read as
text). `seed` replaces the row's derived seed (0 <= seed < 2**63); `temperature` scales the checkpoint's
schedule (engine/params.py `temperature_schedule`); `max_tokens` is `max_new_tokens`. A setting given twice
for one row (two names of one parameter, or a column and sampling_params), or `temperature` with t_max or
t_min, is an error. Keys a request may carry at the value that changes nothing (`n: 1`, `top_p: 1`, ...,
`NEUTRAL`) are accepted at that value and refused at any other; `model`, `user`, `metadata` and `store`
change nothing and are ignored (one job runs one model: `model.path`); any other key is refused, naming it.

engine.params is imported where used: it loads torch, which jobs without per-row settings never need here.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.conversation import json_cell

ALIASES = {"max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens"}
SEED_LIMIT = 1 << 63  # a seed fits int64 and torch.Generator.manual_seed
# Keys accepted only at the value that changes nothing (the first value is the one we do).
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,), "best_of": (1,), "top_p": (1,), "top_k": (-1, 0), "min_p": (0,), "presence_penalty": (0,),
    "frequency_penalty": (0,), "repetition_penalty": (1,), "stream": (False,), "logprobs": (False,),
    "stop_token_ids": ([],), "ignore_eos": (False,), "skip_special_tokens": (True,),
    "detokenize": (True,),
}
IGNORED = ("model", "user", "metadata", "store")
# what a request body may set
OPENAI_NAMES = ("temperature", "max_tokens", "max_completion_tokens", "seed", "stop")


def setting_names() -> tuple[str, ...]:
    """Every name a row may set (in generation_columns or sampling_params)."""
    from engine.params import SAMPLER_BOUNDS

    return ("temperature", "seed", *ALIASES, "stop", *SAMPLER_BOUNDS)


def _parameter(name: str) -> str:
    return ALIASES.get(name, name)


def _conflict(names: list[str]) -> str | None:
    """Why these setting names cannot be set together, or None."""
    seen: dict[str, str] = {}
    for n in names:
        p = _parameter(n)
        if p in seen:
            return f"{seen[p]} and {n} set the same parameter"
        seen[p] = n
    if "temperature" in seen and ("t_max" in seen or "t_min" in seen):
        return "temperature scales the t_max/t_min schedule; set one or the other"
    return None


def settings_problem(names: list[str]) -> str | None:
    """What is wrong with the setting names a spec maps to columns (unknown, or in conflict), or None."""
    known = setting_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        return f"unknown setting {unknown[0]!r} (settings: {', '.join(known)})"
    return _conflict(names)


def from_mapping(value: Any, where: str, accept: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()
                 ) -> tuple[dict[str, tuple[str, Any]], str | None]:
    """({name: (where, value)} of the non-null settings in a sampling_params object, None), or ({}, what is
    wrong). `accept`: the setting names allowed here (default: all); `skip`: keys the caller reads itself."""
    value, why = json_cell(value, where, dict, "an object of settings")
    if why:
        return {}, why
    names = accept if accept is not None else setting_names()
    given: dict[str, tuple[str, Any]] = {}
    for key, v in value.items():
        if v is None or key in skip or key in IGNORED:
            continue
        if key in names:
            given[key] = (f"{where}.{key}", v)
        elif key in NEUTRAL:
            if not any(_same(v, ok) for ok in NEUTRAL[key]):
                return {}, f"{where}.{key} = {v!r} is not supported (only {NEUTRAL[key][0]!r})"
        else:
            return {}, f"{where}.{key} is not supported"
    return given, None


def _same(v: Any, ok: Any) -> bool:
    """v is the neutral value `ok` (True is not 1, and 1 is not True, as JSON tells them apart)."""
    return v == ok and isinstance(v, bool) == isinstance(ok, bool)


def _number(v: Any) -> Any:
    """A number from text holding one (JSON syntax); anything else unchanged (then refused by its bound)."""
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).decode("utf-8", "replace")
    if isinstance(v, str):
        try:
            parsed = json.loads(v)
        except ValueError:
            return v
        return parsed if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else v
    return v


def resolve(given: dict[str, tuple[str, Any]]) -> tuple[dict[str, Any], int | None, str | None]:
    """(engine overrides by parameter name, with `temperature` kept for the backend to map; the row's seed
    or None; None), or ({}, None, what is wrong). `given`: setting name -> (where it came from, value)."""
    if not given:
        return {}, None, None
    from engine.params import SAMPLER_BOUNDS, TEMPERATURE_BOUND, Bound

    why = _conflict(list(given))
    if why:
        return {}, None, f"{why} ({', '.join(w for w, _ in given.values())})"
    overrides: dict[str, Any] = {}
    seed = None
    for name, (where, raw) in given.items():
        p = _parameter(name)
        if p == "stop":
            stop = _stop_strings(raw)
            if stop is None:
                return {}, None, f"{where}: expected a non-empty string or a list of them, got {raw!r}"
            if stop:
                overrides["stop"] = stop
            continue
        bound = {"temperature": TEMPERATURE_BOUND, "seed": Bound(int, 0)}.get(p) or SAMPLER_BOUNDS[p]
        v = _number(raw)
        if bound.kind is int and isinstance(v, float) and v.is_integer():
            v = int(v)
        problem = bound.problem(v)
        if problem is None and p == "seed" and v >= SEED_LIMIT:
            problem = "expected an int < 2**63"
        if problem:
            label = where if where.endswith(f".{name}") else f"{where} ({name})"
            return {}, None, f"{label}: {problem}, got {raw!r}"
        if p == "seed":
            seed = v
        else:
            overrides[p] = v
    return overrides, seed, None


def _stop_strings(v: Any) -> list[str] | None:
    """A row's stop strings from a string, a list of strings or JSON text of a list; None when malformed."""
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).decode("utf-8", "replace")
    if isinstance(v, str) and v.startswith("["):
        try:
            v = json.loads(v)
        except ValueError:
            return None
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) and x for x in items):
        return None
    return list(items)
