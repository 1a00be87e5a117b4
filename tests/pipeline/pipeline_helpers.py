"""Shared helpers for the pipeline tests: writing prompt Parquet files, building specs, checking outputs."""

from __future__ import annotations

import argparse
import json
import os
import secrets as stdlib_secrets
import string
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import read_results
from pipeline.backend import StubBackendFactory

STUB = StubBackendFactory(cost_per_row_s=0.0)


def write_prompts(path: str | Path, prompts: list, *, row_group_size: int | None = None,
                  extra: dict | None = None, storage_options: dict | None = None) -> None:
    cols = {"prompt": prompts, "n": list(range(len(prompts)))}
    cols.update(extra or {})
    table = pa.table(cols)
    if storage_options is not None:
        import fsspec

        with fsspec.open(str(path), "wb", **storage_options) as f:
            pq.write_table(table, f, row_group_size=row_group_size)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, str(path), row_group_size=row_group_size)


def spec(inp: str, out: str, **over) -> dict:
    """A stub-friendly job spec dict; `over` merges into sections (resources=..., input=...)."""
    d = {"input": {"path": inp, "prompt_column": "prompt"}, "output": {"path": out},
         "resources": {"replicas": 2, "shard_rows": 4, "max_attempts": 2, "retry_backoff_s": 0.05,
                       "custom_resources": {"fake_gpu": 1}, "num_cpus_per_replica": 0.5}}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return d


def assert_exactly_once(table: pa.Table, ids: list[str]) -> None:
    got = table.column("id").to_pylist()
    dup = [k for k, c in Counter(got).items() if c > 1]
    assert not dup, f"duplicated ids: {dup[:5]}"
    missing, extra = sorted(set(ids) - set(got)), sorted(set(got) - set(ids))
    assert sorted(got) == sorted(ids), f"missing {missing[:5]}, extra {extra[:5]}"


def wait_for(pred, timeout_s: float, what) -> None:
    """Poll `pred` until true; `what` (a description, or a callable making one) names it on timeout."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for "
                                 f"{what() if callable(what) else what}")
        time.sleep(0.05)


def validate_cli(tmp_path: Path, job: dict, capsys) -> tuple[int, str]:
    """`dgbatch validate` on `job` written as a JSON spec file: (exit status, stdout + stderr)."""
    from jobs import cmd_validate

    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    code = cmd_validate.run(argparse.Namespace(spec=str(path)))
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def planted_secret(tag: str, n: int = 20) -> str:
    """A distinct secret-looking value: tag + random letters and digits (digits included: a bearer token
    needs one to be recognised, pipeline/redact.py _BEARER)."""
    body = "".join(stdlib_secrets.choice(string.ascii_letters + string.digits) for _ in range(n))
    return f"{tag}{body}9"


def akia_key() -> str:
    return "AKIA" + "".join(stdlib_secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def kill_driver_after_commits(tmp_path: Path, job: dict, gcs_address: str, commits: int) -> list[str]:
    """Run the job's driver (tests/pipeline/pipeline_driver.py) on the cluster at `gcs_address`, SIGKILL it
    once `commits` shard markers exist, and wait until the replicas it started are gone (they commit their own
    shards, so one still finishing may commit after the driver died). Returns the command that reruns it."""
    (tmp_path / "spec.json").write_text(json.dumps(job))
    cmd = [sys.executable, str(Path(__file__).parent / "pipeline_driver.py"), str(tmp_path / "spec.json"),
           gcs_address, str(tmp_path / "pids")]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    markers = Path(job["output"]["path"]) / "_commits"
    try:
        done = lambda: markers.exists() and len(list(markers.iterdir())) >= commits  # noqa: E731
        wait_for(lambda: first.poll() is not None or done(), 120, f"{commits} commits")
        assert first.poll() is None, first.stderr.read()[-2000:] if first.stderr else ""
    finally:
        first.kill()
    first.wait(30)
    orphans = [int(p.name) for p in (tmp_path / "pids").iterdir()]
    wait_for(lambda: not any(process_alive(pid) for pid in orphans), 60, "the killed run's replicas to exit")
    return cmd


def interrupt_and_resume(tmp_path: Path, job: dict, gcs_address: str, commits: int,
                         shards: int) -> tuple[dict[str, str], dict[str, str]]:
    """`kill_driver_after_commits`, then rerun the driver to the end. Asserts the killed run left at least
    `commits` of the job's `shards` shard markers but not all, and no _SUCCESS; that the rerun exits 0; and
    that it left every marker the killed run wrote as it was (committed shards are not redone). Returns the
    markers (name -> text) after the killed run and after the rerun."""
    cmd = kill_driver_after_commits(tmp_path, job, gcs_address, commits)
    out = Path(job["output"]["path"])
    before = {p.name: p.read_text() for p in (out / "_commits").iterdir()}
    assert commits <= len(before) < shards and not (out / "_SUCCESS").exists(), sorted(before)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    after = {p.name: p.read_text() for p in (out / "_commits").iterdir()}
    assert all(after.get(k) == v for k, v in before.items())  # committed shards were not redone
    return before, after


def run_losing_a_replica(tmp_path: Path, rows: int, cost_per_row_s: float,
                         lose: Callable[[list[int]], None]) -> dict:
    """Run a job of `rows` prompts, 4 per shard, on a thread with the stub backend (each replica records its
    pid); once a first shard commits, call `lose(pids)` (every replica pid so far, oldest first) to take a
    replica away (SIGKILL it, remove its node). Asserts the job still finishes, restarting a replica, with
    every row once and ok. Returns the job's manifest."""
    from pipeline.executor import run_job  # imports Ray: only the tests that run a job pay for it

    write_prompts(tmp_path / "in.parquet", [f"p{i}" for i in range(rows)])
    pids = tmp_path / "pids"
    factory = StubBackendFactory(cost_per_row_s=cost_per_row_s, pid_dir=str(pids))
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"), resources={"shard_rows": 4})
    result: dict = {}
    th = threading.Thread(target=lambda: result.update(run_job(job, backend_factory=factory, progress=False)))
    th.start()
    commits = tmp_path / "out" / "_commits"
    try:
        wait_for(lambda: commits.exists() and len(list(commits.iterdir())) >= 1, 120, "a first commit")
        lose([int(p.name) for p in sorted(pids.iterdir(), key=os.path.getmtime)])
    finally:
        th.join(180)
    assert not th.is_alive() and result["replica_restarts"] >= 1
    assert_exactly_once(read_results(str(tmp_path / "out")), [f"in.parquet#{i}" for i in range(rows)])
    assert result["rows_by_status"]["ok"] == rows
    return result
