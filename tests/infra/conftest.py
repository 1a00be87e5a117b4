"""Fixtures for the infra tests: a synthetic run directory laid out as `pipeline.sink` documents it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SPEC = {
    "model": {"path": None, "dtype": "float32"},
    "input": {"path": "/data/prompts.parquet", "prompt_column": "prompt", "id_column": None, "chat": True},
    "output": {"path": "OUT", "passthrough_columns": ["topic"]},
    "generation": {"max_new_tokens": 64, "seed": 7},
    "resources": {"replicas": 2, "batch_size": 4, "shard_rows": 10, "max_attempts": 3},
}


def _shard_table(shard: int, rows: int, attempt: int) -> pa.Table:
    ids = [f"f0-{shard * rows + i}" for i in range(rows)]
    # Row 0 of odd shards is an error, row 1 of every third shard is invalid: a mix to plot and group.
    status = ["error" if (i == 0 and shard % 2) else "invalid" if (i == 1 and shard % 3 == 0) else "ok"
              for i in range(rows)]
    error = [
        f"PromptTooLong: prompt of {900 + shard} tokens exceeds 512" if s == "error"
        else "schema: 'age' is not of type 'integer'" if s == "invalid" else None
        for s in status
    ]
    ok = [s != "error" for s in status]
    return pa.table({
        "id": ids,
        "topic": ["t"] * rows,
        "status": status,
        "text": ["<b>hello</b>" if o else None for o in ok],
        "error": error,
        "num_tokens": [20 + i if o else 0 for i, o in enumerate(ok)],
        "canvases": [1 if o else 0 for o in ok],
        "denoising_steps": [8 + (i % 5) if o else 0 for i, o in enumerate(ok)],
        "tokens_per_forward": [2.0 + 0.3 * (i % 4) if o else 0.0 for i, o in enumerate(ok)],
        "seed": list(range(rows)),
        "attempt": [attempt] * rows,
        "latency_s": [0.5 + 0.01 * i if o else 0.0 for i, o in enumerate(ok)],
    })


def build_run(root: Path, *, shards: int = 6, rows: int = 10, committed: int | None = None,
              finished: bool = True, zombie: bool = True) -> dict[str, Any]:
    """Write a run under `root`: plan, job, `committed` shards (data + marker), optionally manifest and
    _SUCCESS, and an uncommitted zombie attempt file that every reader must ignore."""
    committed = shards if committed is None else committed
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "_commits").mkdir(exist_ok=True)
    plan = {"version": 1, "fingerprint": "abc123", "components": {}, "created_at": time.time() - 700,
            "input": "/data/prompts.parquet", "total_rows": shards * rows, "shards": [
                {"id": f"{s:05d}", "file": "/data/prompts.parquet", "file_rel": "prompts.parquet",
                 "start": s * rows, "num_rows": rows} for s in range(shards)]}
    (root / "_plan.json").write_text(json.dumps(plan))
    job = {"spec": SPEC, "model": {"path": "/models/tiny", "label": "random-weight fallback"},
           "fingerprint": "abc123", "written_at": time.time() - 700}
    (root / "_job.json").write_text(json.dumps(job))
    t0 = time.time() - 600
    totals = {"ok": 0, "invalid": 0, "error": 0}
    for s in range(committed):
        attempt = 2 if s == 1 else 1  # shard 1 needed a retry
        table = _shard_table(s, rows, attempt)
        rel = f"data/shard-{s:05d}.attempt-{attempt}.parquet"
        pq.write_table(table, root / rel)
        by_status = {k: table.column("status").to_pylist().count(k) for k in totals}
        for k, v in by_status.items():
            totals[k] += v
        start = t0 + 30 * s
        duration = 25 + 5 * (s % 2)
        (root / "_commits" / f"shard-{s:05d}.json").write_text(json.dumps({
            "shard_id": f"{s:05d}", "file": rel, "attempt": attempt, "rows": rows,
            "rows_by_status": by_status,
            "tokens": sum(table.column("num_tokens").to_pylist()), "replica_id": f"r{s % 2}",
            "started_at": start, "finished_at": start + duration, "duration_s": duration,
        }))
    if zombie:  # a superseded attempt of shard 1 that crashed before committing
        pq.write_table(_shard_table(1, rows, 1).slice(0, 3), root / "data/shard-00001.attempt-1.parquet")
    if finished:
        files = [f"data/shard-{s:05d}.attempt-{2 if s == 1 else 1}.parquet" for s in range(shards)]
        manifest = {"version": 1, "fingerprint": "abc123", "shards": shards, "files": files,
                    "rows": shards * rows, "rows_by_status": totals, "rows_per_s": 0.33,
                    "replica_seconds": 170.0}
        (root / "_manifest.json").write_text(json.dumps(manifest))
        (root / "_SUCCESS").write_text("")
    return {"rows": committed * rows, "status": totals, "shards": shards, "committed": committed}


@pytest.fixture
def make_run(tmp_path: Path):
    def make(name: str = "out", **kw: Any) -> tuple[Path, dict[str, Any]]:
        root = tmp_path / name
        return root, build_run(root, **kw)
    return make


@pytest.fixture
def s3_out(make_run, monkeypatch):
    """A synthetic in-progress run uploaded to a moto S3 server on 127.0.0.1; yields (url, endpoint)."""
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        fs.mkdir("runs")
        root, info = make_run("s3src", shards=4, rows=5, committed=2, finished=False)
        fs.put(f"{root}/", "runs/out/", recursive=True)
        yield "s3://runs/out", endpoint, info
    finally:
        server.stop()
