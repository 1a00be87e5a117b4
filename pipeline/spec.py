"""The batch job spec: one pydantic model per section, loaded from YAML or JSON; unknown keys are errors.

Owns the field names users write (`model.path`, `input.prompt_column`, `resources.shard_rows`, ...), the
checks that need nothing but the spec itself (exactly one of prompt_column/template, exactly one
structured-output source, no credentials in storage options), and `JobSpec.public_dict()`, the resolved
spec that is written next to the results. Checks that need the input files or the model live in
`pipeline.validate`.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Option names that would carry a secret. Credentials come from the environment or the credential chain
# only, so a spec that names one is refused before it can be logged or written into _job.json.
_SECRET_KEYS = {"key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key",
                "aws_session_token", "access_key", "secret_key", "session_token", "account_key", "sas_token"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    # None -> the small model shipped with the package (see pipeline.model_path.resolve_model_path).
    path: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class InputSpec(_Section):
    path: str
    prompt_column: str | None = None
    template: str | None = None  # a str.format string over input columns, e.g. "Summarise: {body}"
    id_column: str | None = None
    chat: bool = True

    @model_validator(mode="after")
    def _one_prompt_source(self) -> InputSpec:
        if (self.prompt_column is None) == (self.template is None):
            raise ValueError("input: set exactly one of prompt_column or template")
        if self.template is not None:
            self.template_columns()  # raises on a malformed format string
        return self

    def template_columns(self) -> list[str]:
        """Column names the template reads, in order of first use."""
        if self.template is None:
            return [self.prompt_column] if self.prompt_column else []
        cols: list[str] = []
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as exc:
            raise ValueError(f"input.template: malformed format string: {exc}") from exc
        for _, name, _, _ in parsed:
            if name is None:
                continue
            base = name.split(".")[0].split("[")[0]
            if not base or base.isdigit():
                raise ValueError(f"input.template: fields must name columns, got {{{name}}}")
            if base not in cols:
                cols.append(base)
        return cols


class OutputSpec(_Section):
    path: str
    passthrough_columns: list[str] = Field(default_factory=list)


class GenerationSpec(_Section):
    """The engine's parameters; None means the checkpoint's generation_config default."""

    max_new_tokens: int | None = Field(default=None, ge=1)
    max_denoising_steps: int | None = Field(default=None, ge=1)
    t_max: float | None = Field(default=None, ge=0)
    t_min: float | None = Field(default=None, ge=0)
    entropy_bound: float | None = Field(default=None, ge=0)
    stability_threshold: int | None = Field(default=None, ge=0)
    confidence_threshold: float | None = Field(default=None, ge=0)
    seed: int = Field(default=0, ge=0)

    def engine_overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k != "seed" and v is not None}


class StructuredOutputSpec(_Section):
    """Where the output constraint comes from; exactly one source. Behaviour lives in pipeline.constraints."""

    json_schema: dict[str, Any] | str | None = None  # a schema object, or a path/URL to one
    pydantic: str | None = None  # "module:ClassName"
    regex: str | None = None
    choice: list[str] | None = None
    schema_column: str | None = None  # per-row JSON Schema in this input column
    compile_timeout_s: float = Field(default=30.0, gt=0)
    # Per-step steering by the constraint (pipeline/constraints/steering.py): "off" (commit-time DP only),
    # "kept" / "valid_sampling", "all", or a comma list of option names. Costs one DP per row per step.
    steering: str = "off"

    @field_validator("steering")
    @classmethod
    def _steering_known(cls, v: str) -> str:
        from pipeline.constraints.steering import SteeringOptions

        SteeringOptions.parse(v)  # raises ValueError naming the unknown option
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputSpec:
        given = [n for n in ("json_schema", "pydantic", "regex", "choice", "schema_column")
                 if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("structured_output: set exactly one of json_schema, pydantic, regex, choice, "
                             f"schema_column (got {given or 'none'})")
        if self.choice is not None and not self.choice:
            raise ValueError("structured_output.choice: must list at least one option")
        return self


class ResourcesSpec(_Section):
    replicas: int = Field(default=1, ge=1)
    num_gpus_per_replica: float = Field(default=0.0, ge=0)
    num_cpus_per_replica: float = Field(default=1.0, ge=0)
    # Extra Ray resources per replica, e.g. {"fake_gpu": 1} in tests or {"accelerator_type:H100": 0.001}.
    custom_resources: dict[str, float] = Field(default_factory=dict)
    batch_size: int = Field(default=16, ge=1)
    shard_rows: int = Field(default=256, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    # A shard lease older than this is presumed hung (e.g. a stuck OOM): the replica is killed and replaced.
    shard_timeout_s: float | None = Field(default=3600.0, gt=0)


class StorageSpec(_Section):
    endpoint_url: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _no_credentials(cls, v: dict[str, Any]) -> dict[str, Any]:
        def walk(d: dict[str, Any], where: str) -> None:
            for k, val in d.items():
                if k.lower() in _SECRET_KEYS:
                    raise ValueError(f"storage.options{where}.{k}: credentials are taken only from the "
                                     "environment or the credential chain, never from the job spec")
                if isinstance(val, dict):
                    walk(val, f"{where}.{k}")
        walk(v, "")
        return v


class JobSpec(_Section):
    model: ModelSpec = Field(default_factory=ModelSpec)
    input: InputSpec
    output: OutputSpec
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    structured_output: StructuredOutputSpec | None = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)

    @field_validator("model", "output", mode="before")
    @classmethod
    def _path_shorthand(cls, value: Any) -> Any:
        # `model: /models/x` and `output: s3://bucket/run` mean {path: ...}, as a model name or an output URL
        # is written everywhere else (vLLM, transformers, Ray Data)
        if isinstance(value, str):
            return {"path": value}
        if value is not None and not isinstance(value, (dict, BaseModel)):
            raise ValueError(f"expected a path (string) or a mapping like {{path: ...}}, got "
                             f"{type(value).__name__} {value!r}")
        return value

    @model_validator(mode="after")
    def _columns_disjoint(self) -> JobSpec:
        from pipeline.outputs import RESERVED_COLUMNS

        clash = sorted(set(self.output.passthrough_columns) & set(RESERVED_COLUMNS))
        if clash:
            raise ValueError(f"output.passthrough_columns: {clash} clash with output columns; rename them")
        return self

    @classmethod
    def load(cls, path: str | Path) -> JobSpec:
        """Read a spec from a YAML or JSON file; errors name the file and the offending field."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise SpecError(f"{p}: cannot read job spec: {exc}") from exc
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise SpecError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}") from exc
        return cls.parse(data, source=str(p))

    @classmethod
    def parse(cls, data: Any, source: str = "job spec") -> JobSpec:
        if isinstance(data, JobSpec):
            return data
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
                msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
                lines.append(f"  {loc}: {msg}")
            raise SpecError(f"{source}: invalid job spec:\n" + "\n".join(lines)) from None

    def public_dict(self) -> dict[str, Any]:
        """The resolved spec as plain JSON data (credentials are refused at load, so nothing to redact)."""
        return self.model_dump(mode="json")


class SpecError(ValueError):
    """A job spec, its inputs or its output prefix are unusable; the message names the culprit."""
