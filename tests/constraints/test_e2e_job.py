"""End to end through the pipeline: one `run_job` per constraint kind over a real Parquet input, on a local
Ray with a fake GPU resource, with the model the pipeline resolves by default (the shipped small model, or the
labelled random-weight fallback). Every row must come back `ok`, its text exactly the constrained string and
its `json` column valid; rows out == rows in. Refusals (too short a budget, an unsupported keyword) must stop
the job before any work, at `dgbatch validate` and at `run_job`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import read_results
from pipeline.executor import run_job
from pipeline.spec import JobSpec, SpecError
from pipeline.validate import validate_job
from tests.constraints.pyd_models import Person
from tests.pipeline.pipeline_helpers import validate_cli

ROOT = Path(__file__).resolve().parents[2]

ITEM = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "tag": {"enum": ["red", "blue"]},
    },
    "required": ["n", "tag"],
}
FLAG = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
REGEX = r"[A-Z][a-z]{1,4}-[0-9]{2}"
LABELS = ["positive", "negative", "neutral"]
PROMPTS = ["Describe the parcel.", "Rate this review: great blender!", "Name a colour.", "Say something."]


@pytest.fixture(scope="module")
def ray_up():
    """A local Ray with logical CPUs and a fake GPU (or the one another module already started)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    # Replicas import the pydantic model by name ("tests.constraints.pyd_models:Person"): put the repo root
    # on the workers' path whatever directory pytest was started from.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old) if p)
    ray.init(num_cpus=4, resources={"fake_gpu": 2}, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _job(tmp_path: Path, name: str, section: dict, *, extra: dict | None = None, max_new_tokens: int = 48):
    inp = tmp_path / name / "in.parquet"
    inp.parent.mkdir(parents=True)
    pq.write_table(pa.table({"prompt": PROMPTS, **(extra or {})}), inp)
    return {
        "input": {"path": str(inp), "prompt_column": "prompt"},
        "output": {"path": str(tmp_path / name / "out")},
        "generation": {"max_new_tokens": max_new_tokens, "max_denoising_steps": 2, "seed": 3},
        "structured_output": section,
        "resources": {"replicas": 1, "shard_rows": 8, "batch_size": 8, "max_attempts": 1,
                      "custom_resources": {"fake_gpu": 1}, "num_cpus_per_replica": 0.5},
    }


def _run(job: dict) -> list[dict]:
    n_in = pq.read_metadata(job["input"]["path"]).num_rows
    manifest = run_job(job, progress=False)
    rows = read_results(job["output"]["path"]).to_pylist()
    assert sorted(r["id"] for r in rows) == [f"in.parquet#{i}" for i in range(n_in)]  # rows out == rows in
    assert manifest["rows"] == n_in
    return rows


def _assert_all_ok(rows: list[dict]) -> None:
    bad = [(r["id"], r["status"], r["error"], r["text"]) for r in rows if r["status"] != "ok"]
    assert not bad, bad


KINDS = {
    "json_schema": {"json_schema": ITEM},
    "pydantic": {"pydantic": "tests.constraints.pyd_models:Person"},
    "regex": {"regex": REGEX},
    "choice": {"choice": LABELS},
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_job_every_row_valid(kind, tmp_path, ray_up):
    rows = _run(_job(tmp_path, kind, KINDS[kind]))
    _assert_all_ok(rows)
    for r in rows:
        text = r["text"]
        if kind == "json_schema":
            jsonschema.validate(json.loads(text), ITEM)
            assert json.loads(r["json"]) == json.loads(text)
        elif kind == "pydantic":
            assert Person.model_validate_json(text) == Person.model_validate_json(r["json"])
        elif kind == "regex":
            assert re.fullmatch(REGEX, text), text
            assert r["json"] is None
        else:
            assert text in LABELS
            js = json.loads(r["json"])
            assert js["label"] == text and set(js["scores"]) == set(LABELS)
            finite = {k: v for k, v in js["scores"].items() if v is not None}
            assert all(v <= 0.0 for v in finite.values())  # log-probabilities
            assert max(finite, key=finite.get) == text  # the committed label is the best-scoring one


def test_job_schema_per_row(tmp_path, ray_up):
    """schema_column: each row's own schema; a row whose schema is unsupported is that row's error only."""
    schemas = [ITEM, FLAG, ITEM, {"type": "integer", "multipleOf": 3}]
    rows = _run(_job(tmp_path, "per_row", {"schema_column": "schema"},
                     extra={"schema": [json.dumps(s) for s in schemas]}))
    by_id = {r["id"]: r for r in rows}
    bad = by_id.pop("in.parquet#3")
    assert bad["status"] == "error" and "unsupported: multipleOf" in bad["error"]
    _assert_all_ok(list(by_id.values()))
    for i in range(3):
        r = by_id[f"in.parquet#{i}"]
        jsonschema.validate(json.loads(r["text"]), schemas[i])
        assert json.loads(r["json"]) == json.loads(r["text"])


def test_refused_before_any_work(tmp_path, capsys):
    """Too short a budget names the minimum; an unsupported keyword is named; nothing is written."""
    short = _job(tmp_path, "short", {"json_schema": ITEM}, max_new_tokens=3)
    with pytest.raises(SpecError, match=r"needs at least (\d+) new tokens, but max_new_tokens=3"):
        validate_job(JobSpec.parse(short))
    rc, err = validate_cli(tmp_path, short, capsys)
    assert rc == 2 and "needs at least" in err and "max_new_tokens=3" in err
    with pytest.raises(SpecError, match="needs at least"):
        run_job(short, progress=False)  # no Ray is needed to refuse: validation runs first
    assert not list(Path(short["output"]["path"]).glob("**/*"))

    enough = _job(tmp_path, "enough", {"json_schema": ITEM})
    need = validate_job(JobSpec.parse(enough)).min_new_tokens
    assert need is not None and 3 < need <= 48
    rc, out = validate_cli(tmp_path, enough, capsys)
    assert rc == 0 and f"needs at least {need} new tokens" in out
    assert f"needs at least {need} new tokens, but max_new_tokens=3" in err  # the refusal named this minimum

    unsup = _job(tmp_path, "unsup", {"json_schema": {"type": "string", "pattern": "^x(?=y)"}})  # a lookahead
    with pytest.raises(SpecError, match="unsupported: pattern"):
        validate_job(JobSpec.parse(unsup))
    rc, err = validate_cli(tmp_path, unsup, capsys)
    assert rc == 2 and "unsupported: pattern" in err
    with pytest.raises(SpecError, match="unsupported: pattern"):
        run_job(unsup, progress=False)
    assert not list(Path(unsup["output"]["path"]).glob("**/*"))
