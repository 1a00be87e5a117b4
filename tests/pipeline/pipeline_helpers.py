"""Shared helpers for the pipeline tests: writing prompt Parquet files, building specs, checking outputs."""

from __future__ import annotations

import argparse
import json
import secrets as stdlib_secrets
import string
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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
