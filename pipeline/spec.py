"""The batch job spec: one pydantic model per section, loaded from YAML or JSON; unknown keys are errors.

Owns the field names users write (`model.path`, `input.prompt_column`, `resources.shard_rows`, ...), the
checks that need nothing but the spec itself (exactly one of prompt_column/template/messages_column, known
per-row setting names, exactly one structured-output source, no credentials anywhere: not in storage
options or headers, not as user info or signed query parameters in a URL), and `JobSpec.public_dict()`, the
resolved spec that is written next to the results (scrubbed: pipeline/redact.py). A section set to null
(`model:` with no value in YAML) means its default. Error messages name the field and never echo a refused
value. Checks that need the input files or the model live in `pipeline.validate`.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from pipeline.all_different_spec import AllDifferentSection
from pipeline.generation_spec import GenerationSpec
from pipeline.redact import REDACTED, is_auth_header, is_credential_name, scrub, scrub_json, url_credentials
from pipeline.user_code import load_callable

# Credentials come from the environment or the credential chain only, so a spec that carries one (an option
# or header named like one, user info or a signature in a URL) is refused before it can be logged or
# written into _job.json. The message names the field, never the value.
_FROM_ENV = "credentials are taken only from the environment or the credential chain, never from the job spec"


def _callable_name(v: str | None) -> str | None:
    if v is not None:
        load_callable(v)  # raises ValueError: bad syntax, import error, not callable
    return v


# "module:function" of the user's, imported when the spec is checked so a bad name fails before any work
UserCallable = Annotated[str | None, AfterValidator(_callable_name)]


def _refuse_url_credentials(where: str, url: str | None) -> str | None:
    """`url` unchanged, or a ValueError naming `where` when it carries user info or a signed query."""
    what = url_credentials(url) if isinstance(url, str) else None
    if what:
        raise ValueError(f"{where}: the URL carries credentials ({what}); {_FROM_ENV}")
    return url


def _null_means_default(value: Any) -> Any:
    # `options:` with no value in YAML (null) means the default, as leaving the key out does
    return {} if value is None else value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    # None -> the small model shipped with the package (see pipeline.model_path.resolve_model_path).
    path: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Quantize a bf16 checkpoint as it loads (model/quant/); a compressed-tensors checkpoint (FP8, W4A16,
    # NVFP4) loads quantized with this left unset.
    quantization: Literal["fp8", "w4a16"] | None = None

    @field_validator("path")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        return _refuse_url_credentials("model.path", v)


class InputSpec(_Section):
    """Where rows come from and how one becomes a prompt; README "Using it" says what each field means.

    `format` unset: each file's extension says (pipeline/shards.py). The prompt: exactly one of
    `prompt_column`, `template` or `messages_column` (pipeline/conversation.py), or none for openai-batch,
    whose id is custom_id (pipeline/openai_batch.py). Per-row settings: pipeline/row_settings.py. The rules
    that tie these fields together are the row recipe's (pipeline/rows.py `check_recipe`)."""

    path: str
    format: Literal["parquet", "jsonl", "csv", "openai-batch"] | None = None
    prompt_column: str | None = None
    template: str | None = None  # a str.format string over input columns, e.g. "Summarise: {body}"
    template_values: UserCallable = None  # fn(values) -> values: a row's template values before filling
    messages_column: str | None = None
    system: str | None = None
    id_column: str | None = None
    chat: bool = True
    generation_columns: dict[str, str] = Field(default_factory=dict)
    sampling_params_column: str | None = None

    @field_validator("path")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        return _refuse_url_credentials("input.path", v)

    @field_validator("generation_columns", mode="before")
    @classmethod
    def _null_is_default(cls, v: Any) -> Any:
        return _null_means_default(v)

    @model_validator(mode="before")
    @classmethod
    def _openai_batch_ids(cls, data: Any) -> Any:  # custom_id identifies a row, as in OpenAI's batch output
        if isinstance(data, dict) and data.get("format") == "openai-batch" and data.get("id_column") is None:
            return {**data, "id_column": "custom_id"}
        return data

    @model_validator(mode="after")
    def _one_prompt_source(self) -> InputSpec:
        from pipeline.rows import check_recipe

        check_recipe(self)  # raises ValueError naming the field
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
                raise ValueError(f"input.template: fields must name columns, got {{{scrub(name)}}}")
            if base not in cols:
                cols.append(base)
        return cols


class OutputSpec(_Section):
    path: str
    passthrough_columns: list[str] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        return _refuse_url_credentials("output.path", v)

    @field_validator("passthrough_columns", mode="before")
    @classmethod
    def _null_is_default(cls, v: Any) -> Any:
        return [] if v is None else v


class StructuredOutputSpec(_Section):
    """Where the output constraint comes from; exactly one source. Behaviour lives in constraints."""

    json_schema: dict[str, Any] | str | None = None  # a schema object, or a path/URL to one
    pydantic: str | None = None  # "module:ClassName"
    regex: str | None = None
    choice: list[str] | None = None
    schema_column: str | None = None  # per-row JSON Schema in this input column
    compile_timeout_s: float = Field(default=30.0, gt=0)
    # How deep a recursive $ref is unrolled (constraints/refs.py); None: its default, lowered until
    # the schema's regex fits its size budget.
    ref_depth: int | None = Field(default=None, ge=1)
    # Per-step steering by the constraint (constraints/steering.py): "off" (commit-time DP only),
    # "kept" / "valid_sampling", "all", or a comma list of option names. Costs one DP per row per step.
    steering: str = "off"
    # "module:function" run on each output that passes the constraint; a rejected one is generated again
    # with a new seed, at most max_regenerations times (pipeline/validators.py).
    validator: UserCallable = None
    max_regenerations: int = Field(default=3, ge=0, le=16)
    all_different: AllDifferentSection | None = None  # pipeline/all_different_spec.py

    @field_validator("json_schema")
    @classmethod
    def _no_credentials(cls, v: Any) -> Any:
        return _refuse_url_credentials("structured_output.json_schema", v) if isinstance(v, str) else v

    @field_validator("steering")
    @classmethod
    def _steering_known(cls, v: str) -> str:
        from constraints.steering import SteeringOptions

        SteeringOptions.parse(v)  # raises ValueError naming the unknown option
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputSpec:
        given = [n for n in ("json_schema", "pydantic", "regex", "choice", "schema_column")
                 if getattr(self, n) is not None]
        if len(given) != 1:
            why = "; a validator checks what one of them produced" if self.validator and not given else ""
            raise ValueError("structured_output: set exactly one of json_schema, pydantic, regex, choice, "
                             f"schema_column (got {given or 'none'}{why})")
        if self.choice is not None and not self.choice:
            raise ValueError("structured_output.choice: must list at least one option")
        if self.validator is None and "max_regenerations" in self.model_fields_set:
            raise ValueError("structured_output.max_regenerations: has no effect without "
                             "structured_output.validator")
        return self

    @model_serializer(mode="wrap")
    def _validator_only_when_set(self, handler: Any) -> dict[str, Any]:
        # Without a validator (or all_different) its fields are left out of every dump, so the plan
        # fingerprint of a job planned before they existed (pipeline/plan.py hashes this dump) is unchanged.
        unset = {"validator", "max_regenerations"} if self.validator is None else set()
        unset |= {"all_different"} if self.all_different is None else set()
        return {k: v for k, v in handler(self).items() if k not in unset}


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

    @field_validator("custom_resources", mode="before")
    @classmethod
    def _null_is_default(cls, v: Any) -> Any:
        return _null_means_default(v)


class StorageSpec(_Section):
    endpoint_url: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("endpoint_url")
    @classmethod
    def _no_url_credentials(cls, v: str | None) -> str | None:
        if v is not None and "@" in v:  # an endpoint is scheme://host:port; '@' can only be user info
            raise ValueError("storage.endpoint_url: the URL carries credentials (user info "
                             f"(user:password@)); {_FROM_ENV}")
        return _refuse_url_credentials("storage.endpoint_url", v)

    @field_validator("options", mode="before")
    @classmethod
    def _null_is_default(cls, v: Any) -> Any:
        return _null_means_default(v)

    @field_validator("options")
    @classmethod
    def _no_credentials(cls, v: dict[str, Any]) -> dict[str, Any]:
        def refuse(where: str, what: str) -> None:
            raise ValueError(f"storage.options{where} is refused ({what}); {_FROM_ENV}")

        def walk(val: Any, where: str, headers: bool) -> None:
            if isinstance(val, dict):
                for k, sub in val.items():
                    name = str(k)
                    if is_credential_name(name) or (headers and is_auth_header(name)):
                        refuse(f"{where}.{name}", "credentials")
                    walk(sub, f"{where}.{name}", headers or "headers" in name.lower())
            elif isinstance(val, (list, tuple)):
                if headers and len(val) == 2 and isinstance(val[0], str) and is_auth_header(val[0]):
                    refuse(f"{where}", f"credentials (header {val[0]!r})")  # headers as [name, value] pairs
                for i, sub in enumerate(val):
                    walk(sub, f"{where}[{i}]", headers)
            elif isinstance(val, str):
                what = url_credentials(val)
                if what:
                    refuse(where, f"the URL carries credentials ({what})")
                if headers and scrub(val) != val:
                    refuse(where, "a header value shaped like a credential")
        walk(v, "", False)
        return v


class JobSpec(_Section):
    model: ModelSpec = Field(default_factory=ModelSpec)
    input: InputSpec
    output: OutputSpec
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    structured_output: StructuredOutputSpec | None = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)

    @field_validator("model", "generation", "resources", "storage", mode="before")
    @classmethod
    def _null_section(cls, value: Any) -> Any:
        return _null_means_default(value)

    @field_validator("model", "output", mode="before")
    @classmethod
    def _path_shorthand(cls, value: Any) -> Any:
        # `model: /models/x` and `output: s3://bucket/run` mean {path: ...}, as a model name or an output URL
        # is written everywhere else (vLLM, transformers, Ray Data)
        if isinstance(value, str):
            return {"path": value}
        if value is not None and not isinstance(value, (dict, BaseModel)):  # the value is not echoed
            raise ValueError(f"expected a path (string) or a mapping like {{path: ...}}, got "
                             f"{type(value).__name__}")
        return value

    @model_validator(mode="after")
    def _columns_disjoint(self) -> JobSpec:
        from pipeline.outputs import RESERVED_COLUMNS

        clash = sorted(set(self.output.passthrough_columns) & set(RESERVED_COLUMNS))
        if clash:
            raise ValueError(f"output.passthrough_columns: {clash} clash with output columns; rename them")
        if self.generation.stop and self.structured_output is not None:
            raise ValueError("generation.stop: structured output decides where a row ends; stop strings "
                             "would cut it short of valid output. Leave one of them out")
        return self

    @classmethod
    def load(cls, path: str | Path) -> JobSpec:
        """Read a spec from a YAML or JSON file; errors name the file and the offending field."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise SpecError(scrub(f"{p}: cannot read job spec: {exc}")) from None
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            # `from None`: the parser's own exception quotes the offending line, which may hold a secret
            raise SpecError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                            f"{_syntax_error_text(exc)}") from None
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
                lines.append(f"  {loc}: {_without_secret_input(msg, err.get('input'))}")
            # `from None`: pydantic's own error carries every refused value. Not scrub() of the whole text:
            # our messages name fields ("headers.Authorization: credentials"), which look like assignments.
            raise SpecError(f"{source}: invalid job spec:\n" + "\n".join(lines)) from None

    def public_dict(self) -> dict[str, Any]:
        """The resolved spec as plain JSON data, for records (`_job.json`, the report): credentials are
        refused at load, and anything secret-shaped in free text (a template, an option value) is scrubbed.
        Hand the spec on (to replicas) with `model_dump(mode="json")`, which is exact."""
        return scrub_json(self.model_dump(mode="json"))


def _strings(value: Any, depth: int = 0) -> list[str]:
    """The strings inside a refused input value (bounded: a whole spec can be an input)."""
    if isinstance(value, str):
        return [value]
    if depth > 8:
        return []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k, depth + 1) + _strings(v, depth + 1)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v, depth + 1)]
    return []


def _without_secret_input(msg: str, value: Any) -> str:
    """`msg` with every secret-shaped string of the refused input replaced by "***" (pydantic's messages
    sometimes quote the input they refuse)."""
    for s in sorted(_strings(value), key=len, reverse=True):
        if len(s) >= 4 and s in msg and (url_credentials(s) or scrub(s) != s):
            msg = msg.replace(s, REDACTED)
    return msg


def _syntax_error_text(exc: Exception) -> str:
    """A YAML/JSON syntax error as "problem (line L, column C)": never the quoted source line."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is not None and problem:
        context = getattr(exc, "context", None)
        return scrub(f"{context + ': ' if context else ''}{problem} (line {mark.line + 1}, "
                     f"column {mark.column + 1})")
    return scrub(str(exc))


class SpecError(ValueError):
    """A job spec, its inputs or its output prefix are unusable; the message names the culprit."""
