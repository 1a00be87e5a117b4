"""The job plan `OUT/_plan.json`: the shard list plus a fingerprint of everything that shapes the output.

The fingerprint covers the model (path, dtype, backend, and the bytes of its config files when readable),
the prompt recipe (input format, column/template/messages column, system prompt, chat, id column, per-row
settings columns), passthrough and structured-output settings, the generation parameters and seed, the
input files with their row-group sizes (and format, for JSONL/CSV: their row groups are the planning's
runs of rows, so the same file plans the same shards), `shard_rows`, and the code version. Resources
other than `shard_rows` are left out on purpose: replicas and batch size change speed, not output, so a
resumed job may use a different cluster. A run whose fingerprint differs from the
`_plan.json` already under its output prefix is refused, naming the components that changed.

_plan.json fields (stable; the report reads them):
  version: 1, fingerprint: sha256 hex, components: {name: value} (what was hashed),
  created_at: unix seconds, input: input.path URL, total_rows: int,
  shards: [{id, file, file_rel, start, num_rows}], and for a JSONL/CSV file's shard also format, columns
  (JSON [[name, Arrow type], ...]) and seek ([row, byte offset, line] the read starts from)
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from pipeline.redact import scrub_json
from pipeline.shards import InputFile, Shard, plan_shards
from pipeline.spec import JobSpec, SpecError
from pipeline.storage import Storage

PLAN_FILE = "_plan.json"
CODE_VERSION = "dgbatch-pipeline/1"


def _code_version() -> str:
    try:
        from importlib.metadata import version

        return f"{CODE_VERSION} dgbatch=={version('dgbatch')}"
    except Exception:  # noqa: BLE001 - not installed (source tree): the pipeline version alone
        return CODE_VERSION


@dataclass
class Plan:
    fingerprint: str
    components: dict[str, Any]
    shards: list[Shard]
    created_at: float
    input: str

    @property
    def total_rows(self) -> int:
        return sum(s.num_rows for s in self.shards)

    def to_json(self) -> dict:
        return {"version": 1, "fingerprint": self.fingerprint, "components": self.components,
                "created_at": self.created_at, "input": self.input, "total_rows": self.total_rows,
                "shards": [s.to_json() for s in self.shards]}

    @classmethod
    def from_json(cls, d: dict) -> Plan:
        return cls(d["fingerprint"], d["components"], [Shard(**s) for s in d["shards"]], d["created_at"],
                   d["input"])


def _prompt_recipe(spec: JobSpec) -> dict[str, Any]:
    """The input section but its path; fields added after the first version only when set, so that the
    fingerprints of jobs planned before them (Parquet, one prompt column or template) keep their value."""
    recipe = spec.input.model_dump(exclude={"path"})
    for name in _LATER_INPUT_FIELDS:
        if recipe[name] in (None, {}):
            del recipe[name]
    return recipe


_LATER_INPUT_FIELDS = ("format", "messages_column", "system", "generation_columns", "sampling_params_column",
                       "template_values")


def fingerprint_components(spec: JobSpec, files: list[InputFile], model_identity: dict[str, Any]
                           ) -> dict[str, Any]:
    return {
        # quantization only when set, so the fingerprints of unquantized jobs keep their components
        "model": {"path": spec.model.path, "dtype": spec.model.dtype, **model_identity,
                  **({"quantization": spec.model.quantization} if spec.model.quantization else {})},
        "prompt": _prompt_recipe(spec),
        "passthrough_columns": list(spec.output.passthrough_columns),
        "generation": spec.generation.fingerprint_dict(),
        "structured_output": (spec.structured_output.model_dump(mode="json")
                              if spec.structured_output else None),
        "inputs": [[f.rel, list(f.row_groups)] + ([f.format] if f.format != "parquet" else [])
                   for f in files],
        "shard_rows": spec.resources.shard_rows,
        "code": _code_version(),
    }


def fingerprint(components: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()


def existing_plan(storage: Storage, components: dict[str, Any]) -> Plan | None:
    """The plan already under the prefix, None if there is none; SpecError if it is another job's.

    `dgbatch validate` calls this too, so a prefix holding a different job is refused before any work.
    """
    storage.invalidate()
    if not storage.exists(PLAN_FILE):
        return None
    old = Plan.from_json(json.loads(storage.read_bytes(PLAN_FILE)))
    fp = fingerprint(components)
    if old.fingerprint != fp:
        changed = sorted(k for k in set(components) | set(old.components)
                         if json.dumps(components.get(k), sort_keys=True, default=str)
                         != json.dumps(old.components.get(k), sort_keys=True, default=str))
        raise SpecError(f"output.path {storage.url}: holds a different job (plan fingerprint "
                        f"{old.fingerprint[:12]} != {fp[:12]}; changed: {', '.join(changed)}). "
                        "Use a new output prefix, or rerun with the original spec to resume.")
    return old


def load_or_create_plan(storage: Storage, spec: JobSpec, files: list[InputFile],
                        model_identity: dict[str, Any]) -> tuple[Plan, bool]:
    """(plan, created). Reuses an existing plan with the same fingerprint; refuses a different one."""
    comps = fingerprint_components(spec, files, model_identity)
    old = existing_plan(storage, comps)
    if old is not None:
        return old, False
    plan = Plan(fingerprint(comps), comps, plan_shards(files, spec.resources.shard_rows), time.time(),
                spec.input.path)
    body = plan.to_json()
    body["components"] = scrub_json(body["components"])  # informational; the fingerprint is already taken
    if storage.create(PLAN_FILE, json.dumps(body, indent=1).encode()):
        return plan, True
    # another driver planned first: it must have planned the same job
    old = existing_plan(storage, comps)
    if old is None:
        raise RuntimeError(f"{storage.uri(PLAN_FILE)}: creating it failed as taken, yet it is not there")
    return old, False
