"""Preview (`dgbatch run SPEC --limit N`, `dgbatch preview SPEC`; pipeline/preview.py, jobs/cmd_run.py) on a
local Ray: the first rows in plan order through the real pipeline, nothing under the real output prefix."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from pipeline_helpers import STUB, assert_exactly_once, spec, write_prompts

from jobs import cli, cmd_run
from pipeline import read_results
from pipeline.executor import run_job
from pipeline.plan import Plan
from pipeline.preview import Preview
from pipeline.shards import Shard
from pipeline.spec import SpecError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _inputs(tmp_path: Path) -> Path:
    prompts = [f"ticket {i}: my order is late" for i in range(14)]
    prompts[3] = None
    write_prompts(tmp_path / "in" / "a.parquet", prompts[:9], row_group_size=3)
    write_prompts(tmp_path / "in" / "b.parquet", prompts[9:])
    return tmp_path / "in"


def _table_rows(text: str) -> list[list[str]]:
    """The row lines of a preview table, split into cells (cells are separated by 2+ spaces)."""
    lines = text.splitlines()
    assert lines[0].split() == ["id", "status", "prompt", "output"] and set(lines[1]) <= {"-", " "}
    return [re.split(r"\s{2,}", line) for line in lines[2:-2]]


def test_first_rows_cuts_the_plan_in_plan_order():
    shards = [Shard("00000-000000000", "f", "a", 0, 4), Shard("00000-000000004", "f", "a", 4, 4),
              Shard("00001-000000000", "g", "b", 0, 3)]
    plan = Plan("fp", {}, shards, 0.0, "in")
    cut = Preview(6, "scratch").first_rows(plan)
    assert [(s.id, s.start, s.num_rows) for s in cut.shards] == [("00000-000000000", 0, 4),
                                                                ("00000-000000004", 4, 2)]
    assert cut.total_rows == 6 and plan.total_rows == 11  # the plan itself is left as it was
    assert Preview(50, "scratch").first_rows(plan).shards == shards
    with pytest.raises(ValueError, match="at least 1 row"):
        Preview(0, "scratch")


def test_preview_runs_the_first_rows_and_writes_nothing_under_out(tmp_path, ray_local, monkeypatch):
    inp, out = _inputs(tmp_path), tmp_path / "out"
    job = spec(str(inp), str(out), input={"template": "Q: {prompt}", "prompt_column": None},
               output={"passthrough_columns": ["n"]})
    scratch_root = tmp_path / "scratch-root"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))

    text = cmd_run.run_preview(job, 11, backend_factory=STUB, progress=False)
    rows = _table_rows(text)
    ids = [f"a.parquet#{i}" for i in range(9)] + ["b.parquet#0", "b.parquet#1"]
    assert [r[0] for r in rows] == ids  # the first 11 rows in plan order, across both files
    for r in rows:
        if r[0] == "a.parquet#3":
            assert r[1] == "error" and r[2] == "[error: a.parquet row 3: template column 'prompt' is null]"
            continue
        i = int(r[0].split("#")[1]) + (9 if r[0].startswith("b") else 0)
        assert r[1] == "ok" and r[2] == f"Q: ticket {i}: my order is late"  # the prompt the template made
        assert r[3].startswith("echo[") and f"Q: ticket {i}" in r[3]  # the stub backend's text
    assert text.splitlines()[-2] == "11 rows (ok 10, invalid 0, error 1)"
    assert text.splitlines()[-1] == f"preview only: nothing was written under {out}"
    assert not out.exists()  # not even the writability probe's directory
    assert list(scratch_root.iterdir()) == []  # the scratch prefix is gone

    m = run_job(job, backend_factory=STUB, progress=False)  # the real run is unaffected by the preview
    assert m["rows"] == 14 and len(m["runs"]) == 1 and m["runs"][0]["rows"] == 14
    assert_exactly_once(read_results(str(out)), [f"a.parquet#{i}" for i in range(9)] +
                        [f"b.parquet#{i}" for i in range(5)])
    before = _files(out)
    again = cmd_run.run_preview(job, 3, backend_factory=STUB, progress=False)
    assert [r[0] for r in _table_rows(again)] == ids[:3]
    assert _files(out) == before  # a preview of a finished job leaves it exactly as it was


def test_preview_refuses_what_a_real_run_refuses(tmp_path, ray_local):
    inp, out = _inputs(tmp_path), tmp_path / "out"

    def refusal(job: dict, preview: bool) -> str:
        with pytest.raises(SpecError) as info:
            if preview:
                cmd_run.run_preview(job, 2, backend_factory=STUB, progress=False)
            else:
                run_job(job, backend_factory=STUB, progress=False)
        return str(info.value)

    missing = spec(str(inp), str(out), input={"prompt_column": "body"})
    assert "missing column 'body'" in refusal(missing, True)
    assert refusal(missing, True) == refusal(missing, False)  # the same message
    assert not out.exists()

    out.mkdir()
    (out / "notes.txt").write_text("theirs")
    foreign = spec(str(inp), str(out))
    assert "holds files that dgbatch did not write" in refusal(foreign, True)
    assert refusal(foreign, True) == refusal(foreign, False)
    assert _files(out) == {"notes.txt": b"theirs"}

    other = tmp_path / "other-out"
    run_job(spec(str(inp), str(other)), backend_factory=STUB, progress=False)
    before = _files(other)
    changed = spec(str(inp), str(other), input={"template": "Q: {prompt}", "prompt_column": None})
    assert "holds a different job" in refusal(changed, True)
    assert _files(other) == before
    inside = spec(str(inp), str(inp / "out"))
    assert "lies inside the input" in refusal(inside, True)
    assert not (inp / "out").exists()


def test_preview_command_with_the_engine(tmp_path, ray_local, capsys):
    write_prompts(tmp_path / "in.parquet", ["Where is my parcel?", "The kettle leaks.", "Refund please."])
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in.parquet"), str(out),
               generation={"max_new_tokens": 8, "max_denoising_steps": 2, "seed": 1},
               resources={"replicas": 2, "batch_size": 4})
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    with pytest.raises(SystemExit):
        cli.main(["run", str(path), "--limit", "0"])
    assert "must be at least 1" in capsys.readouterr().err
    assert cli.main(["preview", str(path), "--limit", "2", "--quiet"]) == 0
    text = capsys.readouterr().out
    rows = _table_rows(text)
    assert [r[:3] for r in rows] == [["in.parquet#0", "ok", "Where is my parcel?"],
                                     ["in.parquet#1", "ok", "The kettle leaks."]]
    assert "2 rows (ok 2, invalid 0, error 0)" in text and not out.exists()


def test_preview_of_an_s3_job_leaves_the_bucket_prefix_empty(bucket, s3_endpoint, ray_local):
    opts = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    write_prompts(f"{bucket}/in/p.parquet", [f"review {i}" for i in range(9)], storage_options=opts)
    job = spec(f"{bucket}/in/", f"{bucket}/out", storage={"endpoint_url": s3_endpoint})
    text = cmd_run.run_preview(job, 5, backend_factory=STUB, progress=False)
    assert [r[:3] for r in _table_rows(text)] == [[f"p.parquet#{i}", "ok", f"review {i}"] for i in range(5)]
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True, **opts)
    assert fs.find(f"{bucket}/out") == [] and fs.find(bucket) == [f"{bucket[5:]}/in/p.parquet"]
