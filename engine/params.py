"""Sampling parameters of one generation request (`GenerationParams`), validated on construction.

Owns: the parameter set of the block-diffusion sampler with each parameter's range (`SAMPLER_BOUNDS`,
`schedule_problem`: what the job spec checks before a model is loaded), how defaults are filled
from a checkpoint's generation_config.json (`GenerationParams.from_model`), and where a row's tokens end
(`first_stop` / `until_stop`: at the first stop id), and what a sampling temperature does to the schedule
(`temperature_schedule`). The engine, the reference `generate()`, the job spec,
the CLI and evaluation all read parameters and stop rules from here, so they live in one place.

Semantics follow transformers 5.23 `DiffusionGemmaGenerationConfig`:
- `max_new_tokens` is rounded UP to whole canvases (the output is not truncated);
- `t_max`/`t_min` set a linear temperature schedule; both None means temperature 1 (no schedule);
- `stability_threshold` or `confidence_threshold` None disables adaptive early stopping;
- `pad_token_id` None means tokens after EOS are not replaced (reference behaviour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Bound:
    """The range of one sampler parameter: an int or a number, >= low (> low when `strict`)."""

    kind: type  # int or float (a float parameter takes ints too)
    low: float
    strict: bool = False
    off: bool = False  # None is allowed: it turns the feature off (GenerationParams' meaning)
    finite: bool = False

    def problem(self, v: Any) -> str | None:
        """What is expected when `v` is out of range (the value itself is not quoted), else None."""
        ok = _is_int(v) if self.kind is int else _is_num(v)
        ok = ok and (v > self.low if self.strict else v >= self.low) and (not self.finite or math.isfinite(v))
        if ok:
            return None
        what = "an int" if self.kind is int else ("a finite number" if self.finite else "a number")
        return f"expected {what} {'>' if self.strict else '>='} {self.low:g}"


# The sampler's parameters and their ranges: the one list that the job spec (pipeline/spec.py) takes
# overrides of and checks against, as GenerationParams does. t_max must also exceed t_min.
SAMPLER_BOUNDS: dict[str, Bound] = {
    "max_new_tokens": Bound(int, 1),
    "max_denoising_steps": Bound(int, 1),
    "t_max": Bound(float, 0, strict=True, off=True),
    "t_min": Bound(float, 0, off=True),
    "entropy_bound": Bound(float, 0, strict=True, finite=True),
    "stability_threshold": Bound(int, 0, off=True),
    "confidence_threshold": Bound(float, 0, strict=True, off=True),
}


# "confidence": the reference's entropy-bounded rule (lowest-entropy positions first); "left_to_right": the
# same number of steps, but step s of N keeps the first ceil(C * s / N) positions whatever their entropy, the
# order an autoregressive model would take (bench/sudoku.py compares the two on one model)
COMMIT_ORDERS = ("confidence", "left_to_right")


def schedule_problem(t_max: Any, t_min: Any) -> str | None:
    """What is expected of a temperature schedule with both ends set (it must fall), else None."""
    if t_max is not None and t_min is not None and not t_max > t_min:
        return "expected t_max > t_min (a falling temperature schedule)"
    return None


@dataclass(frozen=True)
class GenerationParams:
    """Sampler parameters for one request. Raises ValueError naming the bad field.

    The defaults are transformers' global ones (`_get_default_generation_params`), which apply where the
    checkpoint's generation config leaves a field unset. EOS/pad have none: a bare model stops on length."""

    max_new_tokens: int = 256
    max_denoising_steps: int = 48
    t_max: float | None = 0.8
    t_min: float | None = 0.4
    entropy_bound: float = 0.1
    stability_threshold: int | None = 1
    confidence_threshold: float | None = 0.005
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    commit_order: str = "confidence"  # COMMIT_ORDERS: which positions a step keeps (engine/sampler.py)

    def __post_init__(self) -> None:
        if self.commit_order not in COMMIT_ORDERS:
            raise ValueError(
                f"GenerationParams.commit_order: expected one of {', '.join(COMMIT_ORDERS)}, "
                f"got {self.commit_order!r}"
            )
        if isinstance(self.eos_token_ids, int) and not isinstance(self.eos_token_ids, bool):
            object.__setattr__(self, "eos_token_ids", (self.eos_token_ids,))
        elif isinstance(self.eos_token_ids, list):
            object.__setattr__(self, "eos_token_ids", tuple(self.eos_token_ids))
        for name, bound in SAMPLER_BOUNDS.items():
            v = getattr(self, name)
            why = None if v is None and bound.off else bound.problem(v)
            if why:
                none = " or None" if bound.off else ""
                raise ValueError(f"GenerationParams.{name}: {why}{none}, got {v!r}")
        if (self.t_max is None) != (self.t_min is None):
            raise ValueError(
                "GenerationParams.t_max/t_min: set both (a linear schedule) or neither (temperature 1)"
            )
        why = schedule_problem(self.t_max, self.t_min)
        if why:
            raise ValueError(
                f"GenerationParams.t_max/t_min: {why}, got t_max={self.t_max!r} t_min={self.t_min!r}"
            )
        if not isinstance(self.eos_token_ids, tuple) or not all(
            _is_int(t) and t >= 0 for t in self.eos_token_ids
        ):
            raise ValueError(
                f"GenerationParams.eos_token_ids: expected a tuple of non-negative ints, "
                f"got {self.eos_token_ids!r}"
            )
        if self.pad_token_id is not None and (not _is_int(self.pad_token_id) or self.pad_token_id < 0):
            raise ValueError(
                f"GenerationParams.pad_token_id: expected a non-negative int or None, "
                f"got {self.pad_token_id!r}"
            )

    @property
    def early_stopping(self) -> bool:
        """Adaptive stopping is on only when both thresholds are set (as in the reference)."""
        return self.stability_threshold is not None and self.confidence_threshold is not None

    def n_canvases(self, canvas_length: int) -> int:
        """Canvas budget: max_new_tokens rounded up to whole canvases."""
        return math.ceil(self.max_new_tokens / canvas_length)

    def check_vocab(self, vocab_size: int) -> None:
        """Raise ValueError when a special id lies outside the vocabulary."""
        for t in self.eos_token_ids + ((self.pad_token_id,) if self.pad_token_id is not None else ()):
            if t >= vocab_size:
                raise ValueError(
                    f"GenerationParams: token id {t} is outside the vocabulary (size {vocab_size})"
                )

    @classmethod
    def from_defaults(cls, generation: Any = None, **overrides: Any) -> GenerationParams:
        """Build from a `GenerationDefaults`-like object (None fields ignored), then non-None overrides.

        `eos_token_id` is accepted as an alias of `eos_token_ids` (int or sequence), as in transformers.
        """
        values: dict[str, Any] = {}  # what nothing sets keeps the dataclass default
        if generation is not None:
            for name in (*SAMPLER_BOUNDS, "pad_token_id"):
                v = getattr(generation, name, None)
                if v is not None:
                    values[name] = v
            eos = getattr(generation, "eos_token_id", None)
            if eos is not None:
                values["eos_token_ids"] = eos
        if "eos_token_id" in overrides:
            alias = overrides.pop("eos_token_id")
            if alias is not None:
                overrides["eos_token_ids"] = alias
        known = {f.name for f in fields(cls)}
        for name, v in overrides.items():
            if name not in known:
                raise ValueError(f"GenerationParams: unknown parameter {name!r}")
            if v is not None:
                values[name] = v
        eos = values.get("eos_token_ids", ())
        values["eos_token_ids"] = (eos,) if _is_int(eos) else tuple(eos)
        # generation_config.json may store floats as ints (e.g. "t_min": 0): keep them as numbers.
        return cls(**values)

    @classmethod
    def from_model(cls, model: Any, **overrides: Any) -> GenerationParams:
        """Defaults from the checkpoint's generation config (`model.config.generation`), then overrides."""
        cfg = getattr(model, "config", None)
        return cls.from_defaults(getattr(cfg, "generation", None), **overrides)

    def with_(self, **changes: Any) -> GenerationParams:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def first_stop(tokens: list[int], stop_ids: tuple[int, ...] | set[int]) -> int | None:
    """Index of the first stop id (EOS) in `tokens`, or None."""
    stops = set(stop_ids)
    return next((i for i, t in enumerate(tokens) if t in stops), None)


def until_stop(tokens: list[int], stop_ids: tuple[int, ...] | set[int]) -> list[int]:
    """`tokens` before the first stop id (all of them when none occurs): the answer's tokens."""
    cut = first_stop(tokens, stop_ids)
    return list(tokens) if cut is None else list(tokens[:cut])


# A sampling temperature as OpenAI and vLLM name it (per-row `temperature`): a finite number >= 0.
TEMPERATURE_BOUND = Bound(float, 0, finite=True)
# The lowest temperature the schedule is scaled to: the sampler always draws its tokens (there is no argmax
# mode), so T = 0 ("greedy" in OpenAI and vLLM) is taken as this, where a draw is the argmax but for
# near-ties. A low temperature also lowers every position's entropy, so the entropy bound commits more
# positions per denoising step: near-greedy rows take fewer steps.
MIN_TEMPERATURE = 0.01


def temperature_schedule(temperature: float, t_max: float | None, t_min: float | None) -> tuple[float, float]:
    """The (t_max, t_min) that a sampling `temperature` T gives a row whose schedule is (t_max, t_min).

    T scales both ends of the checkpoint's linear schedule (engine/sampler.py `temperature_B`), so T = 1
    keeps it exactly, T = 0.5 halves the temperature
    at every step and the schedule keeps its shape (it still falls, by the same ratio). T below
    MIN_TEMPERATURE, 0 included, is taken as MIN_TEMPERATURE. Raises ValueError for a T out of
    TEMPERATURE_BOUND, or when there is no schedule to scale (t_max/t_min None: a flat temperature 1, which
    GenerationParams cannot express at another value). The job-level knob and per-row settings share this.
    """
    why = TEMPERATURE_BOUND.problem(temperature)
    if why:
        raise ValueError(f"temperature: {why}, got {temperature!r}")
    if t_max is None or t_min is None:
        raise ValueError("temperature: the sampler has no temperature schedule (t_max/t_min unset) to scale; "
                         "set generation.t_max and generation.t_min")
    scale = max(float(temperature), MIN_TEMPERATURE)
    return t_max * scale, t_min * scale
