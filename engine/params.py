"""Sampling parameters of one generation request (`GenerationParams`), validated on construction.

Owns: the parameter set of the block-diffusion sampler (docs/diffusion_gemma.md §5.1) and how defaults are
filled from a checkpoint's generation_config.json (`GenerationParams.from_model`). The engine, the reference
`generate()` and the pipeline all read parameters from here, so the rules live in one place.

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

# The global defaults of transformers' `_get_default_generation_params` (applied when the checkpoint's
# generation config leaves a field unset). EOS/pad have no global default: a bare model stops only on length.
_GLOBAL_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 256,
    "max_denoising_steps": 48,
    "t_max": 0.8,
    "t_min": 0.4,
    "entropy_bound": 0.1,
    "stability_threshold": 1,
    "confidence_threshold": 0.005,
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class GenerationParams:
    """Sampler parameters for one request. Raises ValueError naming the bad field."""

    max_new_tokens: int = 256
    max_denoising_steps: int = 48
    t_max: float | None = 0.8
    t_min: float | None = 0.4
    entropy_bound: float = 0.1
    stability_threshold: int | None = 1
    confidence_threshold: float | None = 0.005
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.eos_token_ids, int) and not isinstance(self.eos_token_ids, bool):
            object.__setattr__(self, "eos_token_ids", (self.eos_token_ids,))
        elif isinstance(self.eos_token_ids, list):
            object.__setattr__(self, "eos_token_ids", tuple(self.eos_token_ids))
        for name in ("max_new_tokens", "max_denoising_steps"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                raise ValueError(f"GenerationParams.{name}: expected a positive int, got {v!r}")
        if (self.t_max is None) != (self.t_min is None):
            raise ValueError(
                "GenerationParams.t_max/t_min: set both (a linear schedule) or neither (temperature 1)"
            )
        if self.t_max is not None:
            if (
                not _is_num(self.t_max)
                or not _is_num(self.t_min)
                or self.t_min < 0
                or self.t_max <= self.t_min
            ):
                raise ValueError(
                    f"GenerationParams.t_max/t_min: need t_max > t_min >= 0, got "
                    f"t_max={self.t_max!r} t_min={self.t_min!r}"
                )
        if (
            not _is_num(self.entropy_bound)
            or not math.isfinite(self.entropy_bound)
            or self.entropy_bound <= 0
        ):
            raise ValueError(
                f"GenerationParams.entropy_bound: expected a float > 0, got {self.entropy_bound!r}"
            )
        if self.stability_threshold is not None and (
            not _is_int(self.stability_threshold) or self.stability_threshold < 0
        ):
            raise ValueError(
                f"GenerationParams.stability_threshold: expected an int >= 0 or None, "
                f"got {self.stability_threshold!r}"
            )
        if self.confidence_threshold is not None and (
            not _is_num(self.confidence_threshold) or self.confidence_threshold <= 0
        ):
            raise ValueError(
                f"GenerationParams.confidence_threshold: expected a float > 0 or None, "
                f"got {self.confidence_threshold!r}"
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
        values: dict[str, Any] = dict(_GLOBAL_DEFAULTS)
        if generation is not None:
            for name in (*_GLOBAL_DEFAULTS, "pad_token_id"):
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
