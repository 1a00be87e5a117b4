"""Validators that regenerate (issue 27 point 2): `structured_output.validator` and `max_regenerations`.

The spec check resolves the validator before any work; the loop (pipeline/validators.py) regenerates
rejected samples in one backend call per round with seeds derived from (seed, attempt); RowGenerator writes
`invalid` with the last message after max_regenerations, an error row when the validator raises, and the
`generations` column. One job on a local Ray (a driver killed mid-run and rerun) shows the third attempt
written and reproduced on resume. Validators live in tests/pipeline/validator_fixtures.py.
"""

from __future__ import annotations

import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import validator_fixtures as vf
from pipeline_helpers import STUB, assert_exactly_once, kill_driver_after_commits, spec, write_prompts

from pipeline import read_results
from pipeline.backend import StubBackendFactory
from pipeline.generator import RowGenerator, output_schema
from pipeline.outputs import RowResult
from pipeline.plan import fingerprint_components
from pipeline.rows import PreparedRow, row_seed, sample_seed
from pipeline.spec import JobSpec, SpecError
from pipeline.validators import REJECTED, Validator, regeneration_seed


def _job(tmp_path, validator: str | None, **so) -> dict:
    section = {"regex": "(?s).*", **({"validator": validator} if validator else {}), **so}
    return spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"), input={"id_column": "key"},
                structured_output=section)


def test_regeneration_seed_is_derived_from_seed_and_attempt():
    assert regeneration_seed(123, 1) == 123  # the first generation keeps the sample's seed
    seeds = [regeneration_seed(123, k) for k in range(1, 18)]
    assert len(set(seeds)) == 17 and all(0 <= s < 2 ** 63 for s in seeds)
    assert seeds == [regeneration_seed(123, k) for k in range(1, 18)]  # a pure function
    assert regeneration_seed(124, 2) != regeneration_seed(123, 2)
    with pytest.raises(ValueError, match="attempt must be >= 1"):
        regeneration_seed(123, 0)


@pytest.mark.parametrize("name, message", [
    ("validator_fixtures", "not of the form 'module:function'"),
    ("validator_fixtures:", "not of the form 'module:function'"),
    ("bad-module:f", "not of the form 'module:function'"),
    ("no_such_module_here:f", "cannot import module 'no_such_module_here': ModuleNotFoundError"),
    ("validator_fixtures:missing", "module 'validator_fixtures' has no attribute 'missing'"),
    ("validator_fixtures:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a callable"),
])
def test_a_bad_validator_fails_the_spec_check(tmp_path, name, message):
    with pytest.raises(SpecError, match="structured_output.validator") as err:
        JobSpec.parse(_job(tmp_path, name))
    assert message in str(err.value)


def test_max_regenerations_bounds_and_needs_a_validator(tmp_path):
    assert JobSpec.parse(_job(tmp_path, "validator_fixtures:accept")).structured_output.max_regenerations == 3
    for bad in (-1, 17):
        with pytest.raises(SpecError, match="structured_output.max_regenerations"):
            JobSpec.parse(_job(tmp_path, "validator_fixtures:accept", max_regenerations=bad))
    with pytest.raises(SpecError, match="max_regenerations: has no effect without"):
        JobSpec.parse(_job(tmp_path, None, max_regenerations=2))
    alone = {**_job(tmp_path, None), "structured_output": {"validator": "validator_fixtures:accept"}}
    with pytest.raises(SpecError, match="a validator checks what one of them produced"):
        JobSpec.parse(alone)


def test_the_validator_enters_the_fingerprint_only_when_set(tmp_path):
    """A job planned before validators existed keeps its fingerprint (and resumes); a validator changes it."""
    def so(job: dict) -> dict:
        return fingerprint_components(JobSpec.parse(job), [], {})["structured_output"]

    plain = so(_job(tmp_path, None))
    assert "validator" not in plain and "max_regenerations" not in plain
    checked = so(_job(tmp_path, "validator_fixtures:accept"))
    assert checked == {**plain, "validator": "validator_fixtures:accept", "max_regenerations": 3}
    assert so(_job(tmp_path, "validator_fixtures:accept", max_regenerations=5))["max_regenerations"] == 5


def test_rejected_samples_are_regenerated_together_with_derived_seeds():
    """Five rows of two samples: each (row, sample) needs its own number of attempts. Every round sends all
    the rejected samples to the backend in one call; each sample ends at its own attempt, with
    regeneration_seed(its seed, attempt); one that needs more than 1 + max_regenerations ends `invalid`."""
    need = {(0, 0): 3, (0, 1): 1, (1, 0): 1, (1, 1): 2, (2, 0): 1, (2, 1): 1, (3, 0): 9, (3, 1): 1,
            (4, 0): 2, (4, 1): 4}
    rows = [PreparedRow(i, f"r{i}", sample_seed(1000 + i, k), f"p{i}", sample=k) for i in range(5)
            for k in range(2)]
    first = {(r.index, r.sample): r.seed for r in rows}
    calls: list[list[tuple[int, int]]] = []

    def attempt_of(r: PreparedRow) -> int:
        return next(k for k in range(1, 10) if regeneration_seed(first[r.index, r.sample], k) == r.seed)

    def generate(batch: list[PreparedRow]) -> list[RowResult]:
        calls.append([(r.index, r.sample) for r in batch])
        return [RowResult(text=f"{r.index}/{r.sample}/{attempt_of(r)}", num_tokens=1) for r in batch]

    def check(text: str, row: dict) -> str | None:
        index, sample, attempt = map(int, text.split("/"))
        assert row == {"prompt": f"p{index}"}  # the sample's input row
        return None if attempt >= need[index, sample] else f"too early: {attempt}"

    v = Validator("validator_fixtures:accept", max_regenerations=3)
    v.fn = check
    out_rows, results = v.generate(generate, rows, [{"prompt": f"p{i}"} for i in range(5)])
    # one call per round, the rejected samples together, each judged on its own
    assert calls == [list(first), [(0, 0), (1, 1), (3, 0), (4, 0), (4, 1)], [(0, 0), (3, 0), (4, 1)],
                     [(3, 0), (4, 1)]]
    for r, res in zip(out_rows, results):
        key = (r.index, r.sample)
        want = min(need[key], 4)
        assert res.generations == want and r.seed == regeneration_seed(first[key], want)
        assert res.text == f"{r.index}/{r.sample}/{want}"
        if need[key] > 4:
            assert (res.status, res.error) == ("invalid", "validator validator_fixtures:accept: too early: 4")
        else:
            assert res.status == "ok" and res.error is None


def _process(tmp_path, job: dict, prompts: list) -> pa.Table:
    """RowGenerator.process (what a replica runs on a shard) over `prompts`, ids k0.., stub backend."""
    sp = JobSpec.parse(job)
    table = pa.table({"prompt": prompts, "key": [f"k{i}" for i in range(len(prompts))]})
    out, stats = RowGenerator(sp, STUB(sp)).process(table, file_rel="in.parquet", first_row=0, attempt=1)
    assert out.schema == output_schema(sp, table.schema, "in.parquet")
    statuses = out.column("status").to_pylist()
    assert stats.rows == out.num_rows and stats.by_status == {s: statuses.count(s) for s in stats.by_status}
    return out


def test_a_validator_that_raises_is_that_rows_error(tmp_path):
    prompts = ["grid 1", f"grid 2 {vf.BOOM}", "grid 3", None]
    out = _process(tmp_path, _job(tmp_path, "validator_fixtures:raise_on_boom"), prompts).to_pylist()
    assert [r["status"] for r in out] == ["ok", "error", "ok", "error"]
    boom = out[1]
    assert boom["error"] == "validator validator_fixtures:raise_on_boom raised KeyError: 'cell r9c9'"
    assert boom["text"] == vf.stub_text(prompts[1], boom["seed"]) and boom["generations"] == 1
    for r, p in ((out[0], prompts[0]), (out[2], prompts[2])):  # the other rows: generated once, untouched
        assert r["error"] is None and r["generations"] == 1
        assert r["seed"] == row_seed(0, r["id"]) and r["text"] == vf.stub_text(p, r["seed"])
    assert out[3]["generations"] == 0  # a null prompt never reaches the model


def test_always_rejected_is_invalid_after_max_regenerations_plus_one(tmp_path):
    job = _job(tmp_path, "validator_fixtures:always_reject", max_regenerations=2)
    prompts = ["5 5 3", "1 2 3"]
    for r, p in zip(_process(tmp_path, job, prompts).to_pylist(), prompts):
        assert r["status"] == "invalid" and r["generations"] == 3
        assert r["error"] == f"validator validator_fixtures:always_reject: no digit may repeat in {p!r}"
        assert r["seed"] == regeneration_seed(row_seed(0, r["id"]), 3)  # the seed of the text written
        assert r["text"] == vf.stub_text(p, r["seed"])  # the last text is kept
    none = _process(tmp_path, _job(tmp_path, "validator_fixtures:always_false", max_regenerations=0), ["x"])
    assert none.to_pylist()[0]["generations"] == 1
    assert none.to_pylist()[0]["error"] == f"validator validator_fixtures:always_false: {REJECTED}"
    odd = _process(tmp_path, _job(tmp_path, "validator_fixtures:returns_number"), ["x"]).to_pylist()[0]
    assert odd["status"] == "error" and "returned a int" in odd["error"] and odd["generations"] == 1


def test_no_validator_no_generations_column(tmp_path):
    out = _process(tmp_path, _job(tmp_path, None), ["a"])
    assert "generations" not in out.column_names and out.column("status").to_pylist() == ["ok"]


def test_third_attempt_written_and_reproduced_on_resume(tmp_path, ray_local):
    """A validator rejecting attempts 1 and 2: every row is written from attempt 3 (its seed derived from the
    row's), by a driver killed after two commits and the rerun that resumes it, equal to what a replica
    computes for the whole file in one go."""
    prompts = [f"puzzle {i}" for i in range(40)]
    write_prompts(tmp_path / "in.parquet", prompts, extra={"key": [f"k{i}" for i in range(40)]})
    job = _job(tmp_path, "validator_fixtures:reject_first_two")
    cmd = kill_driver_after_commits(tmp_path, job, ray_local.get_runtime_context().gcs_address, 2)
    out = tmp_path / "out"
    before = {p.name: p.read_text() for p in (out / "_commits").iterdir()}
    assert 2 <= len(before) < 10 and not (out / "_SUCCESS").exists()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    assert {p.name: p.read_text() for p in (out / "_commits").iterdir() if p.name in before} == before
    got = read_results(str(out))
    assert_exactly_once(got, [f"k{i}" for i in range(40)])
    table = pq.read_table(tmp_path / "in.parquet")
    ref = RowGenerator(JobSpec.parse(job), StubBackendFactory()(JobSpec.parse(job))).process(
        table.select(["prompt", "key"]), file_rel="in.parquet", first_row=0, attempt=1)[0]
    keep = ("id", "status", "text", "error", "seed", "generations")
    resumed = sorted(got.select(keep).to_pylist(), key=lambda r: int(r["id"][1:]))
    assert resumed == ref.select(keep).to_pylist()
    for r in got.to_pylist():
        assert r["status"] == "ok" and r["generations"] == 3
        assert r["seed"] == regeneration_seed(row_seed(0, r["id"]), 3)
