"""End to end on a local Ray (stub backend): local files and S3, resume, bad input, and killed processes."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import (
    STUB,
    assert_exactly_once,
    interrupt_and_resume,
    run_losing_a_replica,
    spec,
    write_prompts,
)

from pipeline import read_results, status
from pipeline.backend import EngineBackendFactory
from pipeline.executor import run_job
from pipeline.spec import SpecError

HERE = Path(__file__).parent


def _ids(n: int, name: str = "in.parquet") -> list[str]:
    return [f"{name}#{i}" for i in range(n)]


def test_local_run_every_row_once_with_bad_rows_and_resume(tmp_path, ray_local):
    prompts = [f"ticket {i}: my order is late" for i in range(14)]
    prompts[3], prompts[7] = None, "  "
    write_prompts(tmp_path / "in" / "a.parquet", prompts[:9], row_group_size=3)
    write_prompts(tmp_path / "in" / "b.parquet", prompts[9:])
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in"), str(out), output={"passthrough_columns": ["n"]})
    m = run_job(job, backend_factory=STUB, progress=False)
    t = read_results(str(out))
    assert_exactly_once(t, _ids(9, "a.parquet") + _ids(5, "b.parquet"))
    assert t.column_names[:3] == ["id", "n", "status"]
    by_id = {r["id"]: r for r in t.to_pylist()}
    assert by_id["a.parquet#3"]["status"] == "error" and "is null" in by_id["a.parquet#3"]["error"]
    assert by_id["a.parquet#7"]["status"] == "error" and "empty" in by_id["a.parquet#7"]["error"]
    assert by_id["b.parquet#0"]["status"] == "ok" and by_id["b.parquet#0"]["n"] == 0
    assert m["rows"] == 14 and m["rows_by_status"] == {"ok": 12, "invalid": 0, "error": 2}
    assert (out / "_SUCCESS").exists() and json.loads((out / "_job.json").read_text())["spec"]["input"]
    marker = json.loads(next((out / "_commits").iterdir()).read_text())
    for k in ("shard_id", "file", "rows_by_status", "tokens", "replica_id", "started_at", "finished_at"):
        assert k in marker
    before = {p.name: p.read_text() for p in (out / "_commits").iterdir()}
    manifest_bytes = (out / "_manifest.json").read_bytes()
    m2 = run_job(job, backend_factory=STUB, progress=False)  # a rerun redoes nothing, rewrites nothing
    assert m2 == m and (out / "_manifest.json").read_bytes() == manifest_bytes
    assert len(m2["runs"]) == 1 and m2["runs"][0]["rows"] == 14
    assert {p.name: p.read_text() for p in (out / "_commits").iterdir()} == before
    s = status(str(out))
    assert s["succeeded"] and s["rows_committed"] == 14 and s["shards_committed"] == s["shards"]
    from jobs import cmd_status

    assert cmd_status.run(argparse.Namespace(output=str(out), endpoint_url=None, json=False)) == 0
    changed = spec(str(tmp_path / "in"), str(out), input={"template": "Q: {prompt}", "prompt_column": None})
    with pytest.raises(SpecError, match="holds a different job"):
        run_job(changed, backend_factory=STUB, progress=False)


def test_s3_run_removes_orphans(bucket, s3_endpoint, ray_local):
    opts = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    write_prompts(f"{bucket}/in/p.parquet", [f"review {i}" for i in range(10)], storage_options=opts)
    out = f"{bucket}/out"
    job = spec(f"{bucket}/in/", out, storage={"endpoint_url": s3_endpoint}, resources={"replicas": 1})
    # An attempt file a crashed writer left behind, with no commit marker: finalize must remove it.
    import fsspec

    with fsspec.open(f"{out}/data/shard-00000-000000000.attempt-7.parquet", "wb", **opts) as f:
        f.write(b"partial")
    run_job(job, backend_factory=STUB, progress=False)
    t = read_results(out, endpoint_url=s3_endpoint)
    assert_exactly_once(t, _ids(10, "p.parquet"))
    fs = fsspec.filesystem("s3", **opts)
    data = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{out}/data", refresh=True))
    assert "shard-00000-000000000.attempt-7.parquet" not in data
    assert "shard-00000-000000000.attempt-8.parquet" in data  # numbered above the leftover
    assert fs.exists(f"{out}/_SUCCESS") and fs.exists(f"{out}/_manifest.json")


def test_bad_inputs_fail_before_generating(tmp_path, bucket, s3_endpoint, ray_local):
    write_prompts(tmp_path / "in.parquet", ["a", "b"])
    inp, out = str(tmp_path / "in.parquet"), str(tmp_path / "out")
    cases = [
        (spec(inp, out, input={"prompt_column": "body"}),
         r"in\.parquet: missing column 'body'.*prompt_column"),
        (spec(inp, out, input={"template": "{title}: {prompt}", "prompt_column": None}),
         r"missing column 'title'.*input\.template"),
        (spec(inp, out, output={"passthrough_columns": ["nope"]}), r"missing column 'nope'"),
        (spec(str(tmp_path / "absent.parquet"), out), r"absent\.parquet: no Parquet files found"),
        (spec(inp, "s3://no-such-bucket-dgbatch/out", storage={"endpoint_url": s3_endpoint}),
         r"output\.path s3://no-such-bucket-dgbatch/out: cannot write"),
    ]
    for job, pattern in cases:
        with pytest.raises(SpecError, match=f"(?s){pattern}"):
            run_job(job, backend_factory=STUB, progress=False)
    with pytest.raises(SpecError, match=r"model\.path /nonexistent/model: no config\.json"):
        run_job(spec(inp, out, model={"path": "/nonexistent/model"}), backend_factory=EngineBackendFactory(),
                progress=False)
    (tmp_path / "corrupt.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SpecError, match=r"corrupt\.parquet: not a readable Parquet file"):
        run_job(spec(str(tmp_path / "corrupt.parquet"), out), backend_factory=STUB, progress=False)
    assert not (tmp_path / "out" / "_plan.json").exists()


def test_poison_row_becomes_one_error_row(tmp_path, ray_local):
    prompts = [f"fine {i}" for i in range(8)]
    prompts[5] = "crash me __POISON__"
    prompts[2] = "raise in python __RAISE__"
    write_prompts(tmp_path / "in.parquet", prompts)
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"),
               resources={"shard_rows": 4, "replicas": 2})
    m = run_job(job, backend_factory=STUB, progress=False)
    t = read_results(str(tmp_path / "out"))
    assert_exactly_once(t, _ids(8))
    rows = {r["id"]: r for r in t.to_pylist()}
    assert rows["in.parquet#5"]["status"] == "error" and "died" in rows["in.parquet#5"]["error"]
    assert rows["in.parquet#5"]["error"].startswith("row in.parquet#5: generation failed 2 times")
    assert rows["in.parquet#2"]["status"] == "error"
    assert "stub backend asked to fail" in rows["in.parquet#2"]["error"]
    assert [rows[f"in.parquet#{i}"]["status"] for i in (0, 1, 3, 4, 6, 7)] == ["ok"] * 6
    assert m["replica_restarts"] >= 4 and m["retries"] >= 4


def test_a_replica_that_cannot_build_its_backend_stops_the_job(tmp_path, ray_local):
    from pipeline.executor import ReplicaInitError

    class Broken:  # defined here so Ray ships it by value to the replica
        def __init__(self, tries: str):
            self.tries = tries

        def __call__(self, job):
            import os
            import uuid

            open(os.path.join(self.tries, uuid.uuid4().hex), "w").close()
            raise ValueError("no checkpoint at /models/x")

    write_prompts(tmp_path / "in.parquet", ["a", "b"])
    out, tries = tmp_path / "out", tmp_path / "tries"
    tries.mkdir()
    job = spec(str(tmp_path / "in.parquet"), str(out), resources={"replicas": 1})
    why = r"^replica r0\.0: cannot build backend: ValueError: no checkpoint at /models/x$"
    with pytest.raises(ReplicaInitError, match=why):
        run_job(job, backend_factory=Broken(str(tries)), progress=False)
    assert len(list(tries.iterdir())) == 1  # stopped at once, not retried
    (run,) = [json.loads(p.read_text()) for p in (out / "_runs").iterdir()]
    assert run["outcome"] == "failed" and run["replica_restarts"] == 0
    assert run["error"].startswith("ReplicaInitError: replica r0.0: cannot build backend")


def test_a_replica_dying_while_starting_is_restarted_until_a_crash_loop(tmp_path, ray_local):
    class DiesStarting:  # defined here so Ray ships it by value to the replica
        def __call__(self, job):
            import os

            os._exit(3)

    write_prompts(tmp_path / "in.parquet", ["a", "b"])
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"), resources={"replicas": 1})
    with pytest.raises(RuntimeError, match=r"replica slot 0 died 5 times while starting: \w+"):
        run_job(job, backend_factory=DiesStarting(), progress=False)


def test_replica_sigkill_mid_shard(tmp_path, ray_local):
    run_losing_a_replica(tmp_path, 24, 0.1, lambda pids: os.kill(pids[0], signal.SIGKILL))


def test_driver_killed_then_rerun(tmp_path, ray_local):
    write_prompts(tmp_path / "in.parquet", [f"p{i}" for i in range(40)])
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in.parquet"), str(out), resources={"shard_rows": 4})
    before, after = interrupt_and_resume(tmp_path, job, ray_local.get_runtime_context().gcs_address, 3, 10)
    assert_exactly_once(read_results(str(out)), _ids(40))
    runs = json.loads((out / "_manifest.json").read_text())["runs"]
    assert [r["outcome"] for r in runs] == ["interrupted", "finished"]
    assert sum(r["rows"] for r in runs) == 40 and runs[0]["rows"] >= 3 * 4
    # The data files are exactly the committed ones: orphans of the killed run are gone.
    files = sorted(p.name for p in (out / "data").iterdir())
    named = sorted(json.loads(v)["file"].split("/")[1] for v in after.values())
    # Seen once on a loaded box (2026-12-07, not reproduced since): shard 12's committed attempt-1 missing
    # and an attempt-2 present. Say everything needed to tell a lost file from a late orphan next time.
    assert files == named, {"files": files, "named": named, "before": sorted(before),
                            "runs": runs, "files_again": sorted(p.name for p in (out / "data").iterdir())}


def test_ray_data_adapter_end_to_end(tmp_path, ray_local):
    import ray

    from pipeline import DiffusionGenerator

    write_prompts(tmp_path / "in" / "a.parquet", [f"q{i}" for i in range(12)],
                  extra={"key": [f"k{i}" for i in range(12)]})
    ds = ray.data.read_parquet(str(tmp_path / "in"))
    out = ds.map_batches(DiffusionGenerator, fn_constructor_kwargs={
        "spec": {"input": {"prompt_column": "prompt", "id_column": "key"},
                 "output": {"passthrough_columns": ["n"]}},
        "backend_factory": STUB}, concurrency=1, batch_size=5, batch_format="pyarrow", num_cpus=0.5)
    out.write_parquet(str(tmp_path / "rd_out"))
    t = pq.read_table(str(tmp_path / "rd_out"))
    assert_exactly_once(t, [f"k{i}" for i in range(12)])
    assert set(t.column("status").to_pylist()) == {"ok"} and "n" in t.column_names
