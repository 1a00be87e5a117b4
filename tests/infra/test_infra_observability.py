"""Metrics without Ray (local tallies, Ray never imported) and JSON-lines logs. Metrics exported through a
real Ray head's Prometheus endpoint are checked in test_infra_ray_submit.py, which starts one anyway."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from pipeline.logs import get_logger


def test_metrics_without_ray_are_local_tallies_and_never_import_ray():
    # A fresh interpreter: this test process may already hold a Ray connection from other tests.
    code = (
        "import sys\n"
        "from pipeline.metrics import Metrics\n"
        "m = Metrics('r0')\n"
        "m.rows('ok', 3); m.rows('error'); m.tokens(50); m.tokens_per_s(12.5)\n"
        "m.denoising_steps(40, rows=4)\n"
        "m.retries(); m.replica_restart(); m.queue_depth(5); m.queue_depth(2)\n"
        "assert not m.exporting\n"
        "assert 'ray' not in sys.modules, 'pipeline.metrics imported ray'\n"
        "import ray\n"  # imported but not initialised: still local only
        "m.retries(0); assert not m.exporting\n"
        "import json; print(json.dumps(m.totals))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    totals = json.loads(out.stdout)
    assert totals == {"rows.ok": 3, "rows.error": 1, "tokens": 50, "tokens_per_s": 12.5,
                      "denoising_steps": 40, "retries": 1, "replica_restarts": 1, "queue_depth": 2}


def test_logs_carry_replica_shard_and_attempt_in_every_line(tmp_path):
    stream = io.StringIO()
    base = get_logger("r3", stream=stream, path=tmp_path / "r3.jsonl")
    base.info("replica up")
    slog = base.bind(shard="00012", attempt=2)
    slog.info("shard leased", extra={"rows": 250})
    secrets = {"aws_secret_access_key": "AKIAxxxx", "storage": {"password": "p"}}
    slog.warning("row %s failed", "f0-7", extra=secrets)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        slog.exception("shard failed")
    slog.bind(attempt=3).info("retrying")
    lines = [json.loads(ln) for ln in stream.getvalue().splitlines()]
    assert [ln["msg"] for ln in lines] == ["replica up", "shard leased", "row f0-7 failed", "shard failed",
                                           "retrying"]
    for ln in lines:
        assert {"ts", "level", "msg", "replica", "shard", "attempt"} <= set(ln)
        assert ln["replica"] == "r3"
    assert (lines[0]["shard"], lines[0]["attempt"]) == (None, None)
    assert all(ln["shard"] == "00012" for ln in lines[1:])
    assert [ln["attempt"] for ln in lines[1:]] == [2, 2, 2, 3]
    assert lines[1]["rows"] == 250
    assert lines[2]["aws_secret_access_key"] == "***" and lines[2]["storage"]["password"] == "***"
    assert "AKIA" not in stream.getvalue()
    assert lines[3]["level"] == "error" and "RuntimeError: boom" in lines[3]["exc"]
    # The file copy holds the same lines; a second get_logger for the same replica does not double them.
    assert (tmp_path / "r3.jsonl").read_text() == stream.getvalue()
    again = io.StringIO()
    get_logger("r3", stream=again).info("restarted")
    assert len(again.getvalue().splitlines()) == 1 and stream.getvalue().count("\n") == 5
