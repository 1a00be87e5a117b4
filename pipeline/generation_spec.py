"""The job spec's `generation` section: the engine's sampler parameters, the job's seed, and the familiar
knobs (`n`, `temperature`, `max_tokens`, `stop`, `logprobs`) as OpenAI and vLLM spell them.

Sampler parameters go under engine/params.py's names (`SAMPLER_BOUNDS`); a parameter left out (or null)
takes the checkpoint's generation_config default. The names, kinds and ranges are the engine's own, not a
copy: a value the engine would refuse is refused here, naming the field, and an unknown name is refused with
the closest known names ("did you mean"). The knobs:

- `n` (>= 1): samples per prompt. Each input row gives n output rows, `sample_index` 0..n-1; sample k's
  seed is `pipeline.rows.sample_seed(row seed, k)` (sample 0 keeps the row seed, so n = 1 is unchanged).
- `temperature`: scales the checkpoint's t_max/t_min schedule (engine/params.py `temperature_schedule`;
  T = 1 keeps it, T = 0 is near-greedy); not with t_max or t_min.
- `max_tokens`: `max_new_tokens` under OpenAI's name; not both.
- `stop`: stop strings (engine/request.py `Request.stop`): a row ends after the canvas whose text holds
  one, its text cut before it. Not with structured output (the constraint decides where a row ends; the
  JobSpec check refuses the pair).
- `logprobs`: true adds the output column `logprobs` (each committed token's log-probability from the step
  that committed it: engine/request.py `Completion.logprobs`).
- `pins`: `{column: NAME, form: holes | json | grid}`: each row's pinned canvas, written in that input
  column in one of pipeline/pin_templates.py's forms (text with `{{hole:N}}`, a JSON skeleton, a grid such
  as an 81-character Sudoku); the engine never changes a pinned token and fills the holes
  (engine/pins.py). A row's template must fit its max_new_tokens; a bad template is that row's error.
  `map: "module:function"` (optional) turns the column's value into the template first, e.g. a Sudoku
  puzzle into the canvas layout its model reads (sudoku/grid.py `canvas_text`); what it raises, or a
  return that is not a string, is that row's error.

The engine is imported only when a parameter is set: it loads torch, which reading a spec otherwise does not.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from pipeline.user_code import load_callable

KNOBS = ("seed", "n", "temperature", "max_tokens", "stop", "logprobs", "pins")
PIN_FORMS = ("holes", "json", "grid")  # pipeline/pin_templates.py's forms (defined here: reading a spec
# does not load torch, which the templates' engine/pins.py does)


class PinsSpec(BaseModel):
    """`generation.pins`: the input column holding each row's pinned canvas, and its form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    form: str
    map: str | None = None  # "module:function": fn(the column's value) -> the template

    @field_validator("map")
    @classmethod
    def _importable(cls, v: str | None) -> str | None:
        if v is not None:
            load_callable(v)  # a bad name fails the spec before any work
        return v

    @field_validator("form")
    @classmethod
    def _known_form(cls, v: str) -> str:
        if v not in PIN_FORMS:
            raise ValueError(f"expected one of {', '.join(PIN_FORMS)}")
        return v


# The generation section of the first job-spec version: its plan fingerprints hash all of them, null if unset
_FIRST_VERSION_FIELDS = ("max_new_tokens", "max_denoising_steps", "t_max", "t_min", "entropy_bound",
                         "stability_threshold", "confidence_threshold", "seed")

class GenerationSpec(BaseModel):
    """See the module docstring. Extra keys are the engine's sampler parameters, checked against its list."""

    model_config = ConfigDict(extra="allow", frozen=True)

    seed: int = Field(default=0, ge=0)
    n: int = Field(default=1, ge=1)
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] = Field(default_factory=list)
    logprobs: bool = False
    pins: PinsSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_parameter_is_default(cls, data: Any) -> Any:
        # `t_max:` with no value means the default, as leaving it out does (and compares equal to that)
        if not isinstance(data, dict):
            return data
        return {k: v for k, v in data.items() if v is not None or k == "seed"}

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v  # OpenAI's `stop` takes a string or a list of them

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, v: list[str]) -> list[str]:
        if any(not s for s in v):
            raise ValueError("stop strings must not be empty")
        return v

    @model_validator(mode="after")
    def _engine_parameters(self) -> GenerationSpec:
        given = dict(self.model_extra or {})
        problems: dict[str, str | None] = {}
        if given or self.temperature is not None:
            from engine.params import SAMPLER_BOUNDS, TEMPERATURE_BOUND, schedule_problem

            for name, v in given.items():
                if name in SAMPLER_BOUNDS:
                    problems[name] = SAMPLER_BOUNDS[name].problem(v)
                else:
                    close = difflib.get_close_matches(name, [*KNOBS, *SAMPLER_BOUNDS], n=3, cutoff=0.6)
                    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
                    problems[name] = (f"unknown field ({hint}knobs: {', '.join(KNOBS)}; sampler parameters: "
                                      f"{', '.join(SAMPLER_BOUNDS)})")
            if "t_min" in given and not problems["t_min"]:
                problems["t_min"] = schedule_problem(given.get("t_max"), given["t_min"])
            if self.temperature is not None:
                problems["temperature"] = TEMPERATURE_BOUND.problem(self.temperature)
                if not problems["temperature"] and ("t_max" in given or "t_min" in given):
                    problems["temperature"] = ("temperature scales the t_max/t_min schedule; "
                                               "set one or the other")
        if self.max_tokens is not None and "max_new_tokens" in given:
            problems["max_tokens"] = "max_tokens is max_new_tokens under OpenAI's name; set one or the other"
        errors = [InitErrorDetails(type=PydanticCustomError("sampler_parameter", why), loc=(name,),
                                   input=given.get(name, getattr(self, name, None)))
                  for name, why in problems.items() if why]
        if errors:  # one error per field, located at the field like pydantic's own
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def engine_overrides(self) -> dict[str, Any]:
        """The engine parameters the spec sets, by engine name (`max_tokens` as max_new_tokens); `temperature`
        is not one: the backend maps it onto the model's schedule (`temperature_schedule`)."""
        over = dict(self.model_extra or {})
        if self.max_tokens is not None:
            over["max_new_tokens"] = self.max_tokens
        return over

    def fingerprint_dict(self) -> dict[str, Any]:
        """What the plan fingerprint hashes, in the form the first version wrote (its seven sampler fields,
        null when unset, and seed) plus the later knobs only when they differ from their defaults, so jobs
        planned before the knobs existed keep their fingerprint and resume (pipeline/plan.py)."""
        d = self.model_dump()
        defaults = {"n": 1, "temperature": None, "max_tokens": None, "stop": [], "logprobs": False,
                    "pins": None}
        out = {name: d.get(name) for name in _FIRST_VERSION_FIELDS}
        out.update({k: v for k, v in d.items() if not (k in defaults and v == defaults[k])})
        if out.get("pins") and out["pins"].get("map") is None:
            out["pins"] = {k: v for k, v in out["pins"].items() if k != "map"}  # as before `map` existed
        return out
