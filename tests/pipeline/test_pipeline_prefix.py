"""The output prefix is ours only where our layout names it; the records of every run are kept.

Issue 22's points 1, 2, 5 and 6, each reproduced as a new user met it: an input file inside the output
prefix was deleted at finalize; `validate` passed prefixes that `run` refused; a rerun rewrote the manifest
with zeros and a resumed run forgot the first run's retries; a 0-row input finished but could not be read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import (
    STUB,
    assert_exactly_once,
    process_alive,
    spec,
    validate_cli,
    wait_for,
    write_prompts,
)

from pipeline import read_results
from pipeline.executor import run_job
from pipeline.plan import load_or_create_plan
from pipeline.prefix import foreign_files, is_ours
from pipeline.shards import list_inputs
from pipeline.sink import remove_orphans
from pipeline.spec import JobSpec, SpecError
from pipeline.storage import Storage
from pipeline.validate import validate_job

REPO = Path(__file__).resolve().parents[2]
IDENT = {"backend": repr(STUB)}  # the plan identity run_job gives the stub backend


@pytest.mark.parametrize("rel, ours", [
    ("_plan.json", True), ("_SUCCESS", True), ("_manifest.json", True), ("_job.json", True),
    ("_commits/shard-00000-000000004.json", True), ("data/shard-00001-000000000.attempt-3.parquet", True),
    ("data/.shard-00001-000000000.attempt-3.parquet.tmp-" + "a" * 32, True),
    ("_runs/run-20261206T101010Z-0a1b2c3d.json", True), ("_report/index.html", True),
    ("_report/throughput.png", True), ("_probe-" + "0" * 32, True), (".tmp-" + "0" * 32, False),
    ("data/input.parquet", False), ("notes.txt", False), ("data/shard-x.attempt-1.parquet", False),
    ("_report/holiday.png", False), ("_commits/shard-00000-000000004.json.bak", False),
    ("sub/_plan.json", False), ("data/.input.parquet.tmp-" + "a" * 32, False),
])
def test_which_names_are_ours(rel, ours):
    assert is_ours(rel) is ours


def test_input_inside_the_output_prefix_is_refused_and_kept(tmp_path, capsys, ray_local):
    # As filed: the input at OUT/data/input.parquet passed validate, the run exited 0, the input was gone.
    out = tmp_path / "out"
    write_prompts(out / "data" / "input.parquet", [f"p{i}" for i in range(6)])
    before = (out / "data" / "input.parquet").read_bytes()
    job = spec(str(out / "data" / "input.parquet"), str(out))
    code, text = validate_cli(tmp_path, job, capsys)
    assert code == 2 and "input.parquet lies inside the output prefix" in text, text
    with pytest.raises(SpecError, match=r"input file .*data/input\.parquet lies inside the output prefix"):
        run_job(job, backend_factory=STUB, progress=False)
    assert (out / "data" / "input.parquet").read_bytes() == before
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["data", "data/input.parquet"]


def test_output_inside_an_input_directory_is_refused(tmp_path):
    write_prompts(tmp_path / "in" / "a.parquet", ["x", "y"])
    for inp in (str(tmp_path / "in"), str(tmp_path / "in" / "*.parquet")):
        with pytest.raises(SpecError, match="lies inside the input"):
            validate_job(JobSpec.parse(spec(inp, str(tmp_path / "in" / "out"))), check_model=False,
                         identity=IDENT)
    # a single input file next to the output is fine
    validate_job(JobSpec.parse(spec(str(tmp_path / "in" / "a.parquet"), str(tmp_path / "in2"))),
                 check_model=False, identity=IDENT)


def test_a_prefix_with_foreign_files_is_refused_and_untouched(tmp_path, capsys, ray_local):
    write_prompts(tmp_path / "in.parquet", [f"p{i}" for i in range(6)])
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "data" / "old.parquet").write_bytes(b"not yours")
    job = spec(str(tmp_path / "in.parquet"), str(out))
    code, text = validate_cli(tmp_path, job, capsys)
    assert code == 2 and "holds files that dgbatch did not write" in text
    assert "data/old.parquet" in text and "notes.txt" in text
    with pytest.raises(SpecError, match="did not write"):
        run_job(job, backend_factory=STUB, progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "data" / "old.parquet").read_bytes() == b"not yours"
    assert sorted(p.name for p in out.rglob("*")) == ["data", "notes.txt", "old.parquet"]  # nothing written


def test_orphan_removal_touches_only_attempt_files(tmp_path):
    # A second line behind the prefix check: finalize deletes only names of our attempt-file form.
    st = Storage(str(tmp_path))
    for name in ("shard-00000-000000000.attempt-1.parquet", "shard-00000-000000000.attempt-2.parquet",
                 "input.parquet", "shard-00000-000000000.attempt-2.parquet.bak"):
        st.write_bytes(f"data/{name}", b"x")
    commits = {"00000-000000000": {"file": "data/shard-00000-000000000.attempt-2.parquet"}}
    assert remove_orphans(st, commits) == ["shard-00000-000000000.attempt-1.parquet"]
    kept = "shard-00000-000000000.attempt-2.parquet"
    assert sorted(os.listdir(tmp_path / "data")) == ["input.parquet", kept, f"{kept}.bak"]
    assert foreign_files(st) == ["data/input.parquet", "data/shard-00000-000000000.attempt-2.parquet.bak"]


def test_validate_refuses_a_prefix_holding_a_different_job(tmp_path, capsys):
    write_prompts(tmp_path / "in.parquet", [f"p{i}" for i in range(6)])
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in.parquet"), str(out))
    from pipeline.model_path import model_identity

    parsed = JobSpec.parse(job)
    load_or_create_plan(Storage(str(out)), parsed, list_inputs(str(tmp_path / "in.parquet")),
                        model_identity(parsed.model))  # as `dgbatch run` plans it
    code, text = validate_cli(tmp_path, job, capsys)
    assert code == 0 and "resume" in text, text
    changed = spec(str(tmp_path / "in.parquet"), str(out), generation={"seed": 7})
    code, text = validate_cli(tmp_path, changed, capsys)
    assert code == 2 and "holds a different job" in text and "changed: generation" in text, text


def test_an_empty_input_finishes_with_an_empty_readable_result(tmp_path, capsys, ray_local):
    write_prompts(tmp_path / "in.parquet", [])
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in.parquet"), str(out), output={"passthrough_columns": ["n"]})
    code, text = validate_cli(tmp_path, job, capsys)
    assert code == 0 and "0 rows" in text and "empty result" in text, text
    m = run_job(job, backend_factory=STUB, progress=True)
    assert "has no rows" in capsys.readouterr().err
    assert m["rows"] == 0 and m["shards"] == 0 and (out / "_SUCCESS").exists()
    t = read_results(str(out))
    assert t.num_rows == 0 and t.column_names[:3] == ["id", "n", "status"]
    assert t.schema.field("n").type == pq.read_schema(tmp_path / "in.parquet").field("n").type


_DRIVER = """
import json, sys
from pipeline.backend import StubBackendFactory
from pipeline.executor import run_job
job, address, pids = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
run_job(job, backend_factory=StubBackendFactory(cost_per_row_s=0.05, pid_dir=pids), ray_address=address,
        progress=False)
"""


def test_every_runs_figures_survive_a_fault_and_a_resume(tmp_path, ray_local):
    # As filed: after a run with a replica kill was itself killed and resumed, the manifest said retries 0.
    write_prompts(tmp_path / "in.parquet", [f"p{i}" for i in range(48)])
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in.parquet"), str(out), resources={"shard_rows": 4})
    cmd = [sys.executable, "-c", _DRIVER, json.dumps(job), ray_local.get_runtime_context().gcs_address,
           str(tmp_path / "pids")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    commits, runs = out / "_commits", out / "_runs"
    try:
        wait_for(lambda: commits.exists() and len(list(commits.iterdir())) >= 1, 120, "a first commit")
        victim = int(sorted((tmp_path / "pids").iterdir(), key=os.path.getmtime)[0].name)
        os.kill(victim, signal.SIGKILL)  # a replica dies: one restart and one retry for this run

        def recorded() -> bool:
            rec = [json.loads(p.read_text()) for p in runs.iterdir()] if runs.exists() else []
            return bool(rec) and rec[0]["replica_restarts"] >= 1 and rec[0]["retries"] >= 1
        wait_for(recorded, 60, "the run record to show the restart")
    finally:
        first.kill()  # then the driver itself dies, mid-job
    first.wait(30)
    # the killed driver's replicas go with it: wait until they have (the rerun must not race them)
    orphans = [int(p.name) for p in (tmp_path / "pids").iterdir()]
    wait_for(lambda: not any(process_alive(pid) for pid in orphans), 60, "the killed run's replicas to exit")
    assert not (out / "_SUCCESS").exists()
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    m = json.loads((out / "_manifest.json").read_text())
    assert [r["outcome"] for r in m["runs"]] == ["interrupted", "finished"]
    assert m["runs"][0]["replica_restarts"] >= 1 and m["runs"][0]["retries"] >= 1
    assert m["replica_restarts"] == sum(r["replica_restarts"] for r in m["runs"]) >= 1
    assert m["retries"] == sum(r["retries"] for r in m["runs"]) >= 1
    assert sum(r["rows"] for r in m["runs"]) == m["rows"] == 48
    assert m["wall_s"] == pytest.approx(sum(r["wall_s"] for r in m["runs"]), abs=0.01)
    assert m["runs"][0]["wall_s"] > 0 and m["runs"][1]["rows"] > 0
    assert_exactly_once(read_results(str(out)), [f"in.parquet#{i}" for i in range(48)])
    from pipeline.report import write_report

    html = Path(write_report(str(out))).read_text()
    assert "<td>interrupted</td>" in html and "<td>finished</td>" in html  # the runs table
    assert f"<td>manifest: replica_restarts</td><td>{m['replica_restarts']}</td>" in html


def test_foreign_files_on_s3_are_found_and_neighbours_ignored(bucket, s3_endpoint):
    st = Storage(f"{bucket}/out", s3_endpoint)
    assert foreign_files(st) == []  # an absent prefix is empty
    for rel in ("../out-other/x.txt", "_plan.json", "data/shard-00000-000000000.attempt-1.parquet"):
        st.fs.pipe_file(st.path(rel) if not rel.startswith("..") else f"{bucket[5:]}/out-other/x.txt", b"x")
    assert foreign_files(st) == []  # ours, and a neighbour prefix that only shares the name's start
    st.fs.pipe_file(st.path("sub/notes.txt"), b"x")
    assert foreign_files(st) == ["sub/notes.txt"]


def test_the_report_deletes_only_its_own_charts(tmp_path, ray_local):
    write_prompts(tmp_path / "in.parquet", ["a", "b"])
    run_job(spec(str(tmp_path / "in.parquet"), str(tmp_path / "out")), backend_factory=STUB, progress=False)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "holiday.png").write_bytes(b"mine")
    (pictures / "errors.png").write_bytes(b"a stale chart of ours")  # this run has no errors: no chart
    from pipeline.report import write_report

    write_report(str(tmp_path / "out"), report_dir=str(pictures))
    assert (pictures / "holiday.png").read_bytes() == b"mine" and not (pictures / "errors.png").exists()
