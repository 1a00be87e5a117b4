"""`dgbatch export` (pipeline/export.py, jobs/cmd_export.py) on real runs: stub backend, local Ray, local
files and the S3 server on loopback."""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import STUB, spec, write_prompts

import pipeline.export as export_mod
from jobs import cmd_export
from pipeline import read_results
from pipeline.executor import run_job
from pipeline.storage import Storage


def _export(capsys, out: str, fmt: str = "jsonl", dest: str | None = None, endpoint_url: str | None = None
            ) -> tuple[int, str, str]:
    code = cmd_export.run(argparse.Namespace(out=out, format=fmt, dest=dest, endpoint_url=endpoint_url))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _finished_run(tmp_path: Path) -> tuple[Path, Path]:
    """A finished 10-row run over two files with a null prompt (an error row) and passthrough columns of
    types JSON has no word for: (input directory, output prefix)."""
    t0 = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)
    prompts = [f"review {i}: the lid cracked" for i in range(10)]
    prompts[2] = None
    times = [t0 + datetime.timedelta(minutes=i) for i in range(10)]
    extra = {"ts": pa.array(times, pa.timestamp("us", "UTC")),
             "blob": pa.array([b"plain" if i % 2 else b"\xff\x00" for i in range(10)], pa.binary()),
             "score": [float("nan") if i == 4 else i / 2 for i in range(10)],
             "tags": [["a", str(i)] for i in range(10)]}
    full = pa.table({"prompt": prompts, "n": list(range(10)), **extra})
    (tmp_path / "in").mkdir()
    pq.write_table(full.slice(0, 6), tmp_path / "in" / "a.parquet", row_group_size=3)
    pq.write_table(full.slice(6), tmp_path / "in" / "b.parquet")
    out = tmp_path / "out"
    job = spec(str(tmp_path / "in"), str(out),
               output={"passthrough_columns": ["n", "ts", "blob", "score", "tags"]})
    run_job(job, backend_factory=STUB, progress=False)
    return tmp_path / "in", out


def test_jsonl_and_openai_batch_exports_of_a_finished_run(tmp_path, ray_local, capsys):
    _, out = _finished_run(tmp_path)
    want = read_results(str(out)).to_pylist()
    before = _files(out)

    code, text, err = _export(capsys, str(out))
    assert code == 0 and "10 rows (finished run) -> stdout" in err
    got = [json.loads(line) for line in text.splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in want]  # every committed row once, in plan order
    assert [r["id"] for r in got][:3] == ["a.parquet#0", "a.parquet#1", "a.parquet#2"]
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w)  # every column, in the table's order
        for k in ("id", "n", "status", "text", "error", "num_tokens", "seed", "attempt", "tags"):
            assert g[k] == w[k], k
        assert g["ts"] == w["ts"].isoformat() and g["ts"].startswith("2024-05-01T")
        assert g["blob"] == ("plain" if w["n"] % 2 else base64.b64encode(b"\xff\x00").decode())
        assert g["score"] == (None if w["n"] == 4 else w["score"])  # NaN has no JSON spelling
    assert got[2]["status"] == "error" and "is null" in got[2]["error"]

    dest = tmp_path / "exports" / "rows.jsonl"
    code, text2, err = _export(capsys, str(out), dest=str(dest))
    assert code == 0 and text2 == "" and dest.read_text() == text and str(dest) in err

    code, text, _ = _export(capsys, str(out), fmt="openai-batch")
    assert code == 0
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 10 and len({ln["id"] for ln in lines}) == 10
    markers = {m["file"]: m for m in (json.loads(p.read_text()) for p in (out / "_commits").iterdir())}
    finish_times = {int(m["finished_at"]) for m in markers.values()}
    for line, w in zip(lines, want, strict=True):
        assert set(line) == {"id", "custom_id", "response", "error"} and line["custom_id"] == w["id"]
        assert line["id"].startswith("batch_req_")
        if w["status"] == "error":
            assert line["response"] is None
            assert line["error"] == {"code": "row_error", "message": w["error"]}
            continue
        assert line["error"] is None
        resp = line["response"]
        assert resp["status_code"] == 200 and resp["request_id"].startswith("req_")
        body = resp["body"]
        assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
        assert body["created"] in finish_times and body["model"].startswith("stub backend")
        assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": w["text"]},
                                    "logprobs": None, "finish_reason": "stop"}]
        assert body["usage"] == {"completion_tokens": w["num_tokens"]}
    _, again, _ = _export(capsys, str(out), fmt="openai-batch")
    assert again == text  # ids are stable across exports
    assert _files(out) == before  # export wrote nothing under OUT


def test_openai_batch_keeps_an_invalid_rows_text_and_names_why():
    row = {"id": 7, "status": "invalid", "text": '{"a": ', "error": "not valid JSON", "num_tokens": 3}
    line = export_mod.openai_record(row, {"finished_at": 1700000000.5}, fingerprint="f" * 64, model="m")
    assert line["custom_id"] == "7"
    assert line["error"] == {"code": "invalid_output", "message": "not valid JSON"}
    body = line["response"]["body"]
    assert body["choices"][0]["message"]["content"] == '{"a": ' and body["created"] == 1700000000
    assert body["model"] == "m"


def test_only_committed_rows_of_a_run_in_progress(tmp_path, ray_local, capsys):
    _, out = _finished_run(tmp_path)
    # As a run stopped mid-way leaves it: no _SUCCESS or manifest, one shard's data file without a marker.
    (out / "_SUCCESS").unlink()
    (out / "_manifest.json").unlink()
    marker_path = sorted((out / "_commits").iterdir())[0]
    uncommitted = json.loads(marker_path.read_text())
    marker_path.unlink()
    assert (out / uncommitted["file"]).exists()
    left_out = set(pq.read_table(out / uncommitted["file"]).column("id").to_pylist())
    code, text, err = _export(capsys, str(out))
    ids = [json.loads(line)["id"] for line in text.splitlines()]
    assert code == 0 and len(ids) == 10 - len(left_out) and not left_out & set(ids)
    assert ids == [r["id"] for r in read_results(str(out)).to_pylist()]
    assert "in progress or stopped: only 2/3 shards committed" in err


def test_rows_stream_one_committed_file_at_a_time(tmp_path, ray_local, monkeypatch):
    _, out = _finished_run(tmp_path)
    reads: list[str] = []
    real_read = Storage.read_bytes

    def counting(self, rel):
        reads.append(rel)
        return real_read(self, rel)
    monkeypatch.setattr(Storage, "read_bytes", counting)
    run = export_mod.open_run(str(out))
    reads.clear()
    rows = export_mod.iter_rows(run, batch_rows=2)
    first, _ = next(rows)
    assert first["id"] == "a.parquet#0" and len(reads) == 1 and reads[0].startswith("data/")
    rest = list(rows)
    assert len(rest) == 9 and len(reads) == 3 == len(set(reads))  # each committed file read once


def test_a_failed_export_leaves_no_destination(tmp_path, ray_local, monkeypatch):
    _, out = _finished_run(tmp_path)
    calls = {"n": 0}
    real = export_mod.jsonl_record

    def fails_late(row):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("storage went away")
        return real(row)
    monkeypatch.setattr(export_mod, "jsonl_record", fails_late)
    dest = tmp_path / "rows.jsonl"
    with pytest.raises(RuntimeError, match="storage went away"):
        export_mod.export(export_mod.ExportConfig(str(out), dest=str(dest), batch_rows=2))
    assert calls["n"] == 7 and not dest.exists()  # three batches were written, then discarded


def test_export_refuses_what_is_not_a_run_and_destinations_it_must_not_write(tmp_path, ray_local, capsys):
    inp, out = _finished_run(tmp_path)
    code, text, err = _export(capsys, str(tmp_path / "absent"))
    assert code == 2 and text == "" and "not a dgbatch output prefix (no _plan.json)" in err
    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "notes.parquet").write_bytes(b"theirs")
    code, text, err = _export(capsys, str(other))
    assert code == 2 and "not a dgbatch output prefix" in err
    assert _files(other) == {"notes.parquet": b"theirs"}
    before, inputs = _files(out), _files(inp)
    refusals = [
        (str(out / "export.jsonl"), "inside the output prefix"),
        (str(out / "data" / "x.jsonl"), "inside the output prefix"),
        (str(out), "inside the output prefix"),
        (str(tmp_path / "x" / ".." / "out" / "e.jsonl"), "inside the output prefix"),
        (str(inp / "a.parquet"), "inside the input"),
        (str(inp / "export.jsonl"), "inside the input"),
    ]
    for dest, why in refusals:
        code, text, err = _export(capsys, str(out), dest=dest)
        assert code == 2 and why in err, (dest, err)
    assert _files(out) == before and _files(inp) == inputs
    single = tmp_path / "single.parquet"
    write_prompts(single, ["a", "b"])
    run_job(spec(str(single), str(tmp_path / "out1")), backend_factory=STUB, progress=False)
    code, _, err = _export(capsys, str(tmp_path / "out1"), dest=str(single))
    assert code == 2 and "is the job's input" in err and pq.read_table(single).num_rows == 2
    code, _, _ = _export(capsys, str(tmp_path / "out1"), dest=str(tmp_path / "single.jsonl"))
    assert code == 0 and len((tmp_path / "single.jsonl").read_text().splitlines()) == 2


def test_export_from_s3(bucket, s3_endpoint, ray_local, tmp_path, capsys):
    opts = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    write_prompts(f"{bucket}/in/p.parquet", [f"review {i}" for i in range(9)], storage_options=opts)
    out = f"{bucket}/out"
    run_job(spec(f"{bucket}/in/", out, storage={"endpoint_url": s3_endpoint}), backend_factory=STUB,
            progress=False)
    want = [r["id"] for r in read_results(out, endpoint_url=s3_endpoint).to_pylist()]
    assert len(want) == 9

    code, text, err = _export(capsys, out, endpoint_url=s3_endpoint)
    assert code == 0 and [json.loads(x)["id"] for x in text.splitlines()] == want

    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True, **opts)
    listing = sorted(fs.find(out))
    code, _, err = _export(capsys, out, fmt="openai-batch", dest=f"{bucket}/exports/batch.jsonl",
                           endpoint_url=s3_endpoint)
    assert code == 0
    lines = [json.loads(x) for x in fs.cat_file(f"{bucket}/exports/batch.jsonl").decode().splitlines()]
    assert [ln["custom_id"] for ln in lines] == want and all(ln["error"] is None for ln in lines)
    for dest in (f"{out}/batch.jsonl", f"{out}/_commits/x.jsonl"):
        code, _, err = _export(capsys, out, dest=dest, endpoint_url=s3_endpoint)
        assert code == 2 and "inside the output prefix" in err
    code, _, err = _export(capsys, out, dest=f"{bucket}/in/export.jsonl", endpoint_url=s3_endpoint)
    assert code == 2 and "inside the input" in err
    fs.invalidate_cache()
    assert sorted(fs.find(out)) == listing and not fs.exists(f"{bucket}/in/export.jsonl")
    code, _, err = _export(capsys, f"{bucket}/nothing-here", endpoint_url=s3_endpoint)
    assert code == 2 and "not a dgbatch output prefix" in err
    assert os.listdir(tmp_path) == []  # nothing local either
