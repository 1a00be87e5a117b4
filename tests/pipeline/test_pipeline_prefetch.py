"""Overlapping commits with generation: the background committer, and a replica dying with a commit queued.

A replica hands each generated shard to a background committer and takes its next lease at once. These
tests pin what must not change because of that: commits are reported exactly once, in order, errors
included; at most one commit is in flight; and when a replica dies with a commit queued, a shard whose
marker exists counts as done while any other is re-leased, with every id exactly once either way.
"""

from __future__ import annotations

import json
import threading
import time

import pyarrow as pa
import pytest
from pipeline_helpers import assert_exactly_once, spec, write_prompts

from pipeline.generator import RowGenerator
from pipeline.rows import prepare_rows
from pipeline.sink import BackgroundCommitter, commit_name, data_name, read_results
from pipeline.spec import InputSpec, JobSpec
from pipeline.storage import Storage


def _table(n: int) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(n)]})


def test_committer_reports_each_commit_once_in_order(tmp_path):
    storage = Storage(str(tmp_path / "out"))
    c = BackgroundCommitter(storage)
    for i, sid in enumerate(("a", "b", "c")):
        c.submit(sid, 1, _table(i + 1), {"tokens": i})
    reports = c.take(wait=True)
    assert reports == [{"shard_id": s, "attempt": 1, "won": True} for s in ("a", "b", "c")]
    assert c.take(wait=True) == [] and c.pending == 0
    marker = json.loads(storage.read_bytes(commit_name("b")))
    assert marker["rows"] == 2 and marker["tokens"] == 1 and storage.exists(marker["file"])

    c.submit("a", 2, _table(1), {})  # a later attempt of a committed shard loses and removes its file
    assert c.take(wait=True) == [{"shard_id": "a", "attempt": 2, "won": False}]
    assert not storage.exists(data_name("a", 2))

    storage.create(data_name("d", 1), b"someone else's")  # a taken attempt name fails, it is not overwritten
    c.submit("d", 1, _table(1), {})
    (rep,) = c.take(wait=True)
    assert rep["shard_id"] == "d" and "FileExistsError" in rep["error"]
    assert "shard-d.attempt-1" in rep["error"]
    assert not storage.exists(commit_name("d")) and storage.read_bytes(data_name("d", 1)) == b"someone else's"
    c.close()


def test_committer_keeps_one_commit_in_flight(tmp_path):
    release = threading.Event()

    class GatedStorage(Storage):
        def create(self, rel: str, data: bytes) -> bool:
            if rel == data_name("a", 1):
                release.wait(10)
            return super().create(rel, data)

    c = BackgroundCommitter(GatedStorage(str(tmp_path / "out")))
    c.submit("a", 1, _table(1), {})
    second = threading.Thread(target=c.submit, args=("b", 1, _table(1), {}))
    second.start()
    time.sleep(0.3)
    assert second.is_alive() and c.take() == []  # b waits for a: one finished table held, not a queue
    release.set()
    second.join(10)
    assert [r["shard_id"] for r in c.take(wait=True)] == ["a", "b"]
    c.close()


def test_prepare_rows_fast_path_keeps_the_checks():
    t = pa.table({"prompt": ["fine", "nul\x00inside", "  ", None]})
    rows = prepare_rows(t, InputSpec(path="x", prompt_column="prompt"), job_seed=1, file_rel="f", first_row=7)
    assert rows[0].prompt == "fine" and rows[0].error is None
    assert rows[1].error == "f row 8: prompt column 'prompt' contains a NUL character"
    assert rows[2].error == "f row 9: prompt is empty"
    assert rows[3].error == "f row 10: prompt column 'prompt' is null"
    ints = prepare_rows(pa.table({"prompt": [5]}), InputSpec(path="x", prompt_column="prompt"), job_seed=1,
                        file_rel="f", first_row=0)
    assert ints[0].prompt == "5"


def test_warm_up_touches_no_backend():
    RowGenerator(JobSpec.parse(spec("in", "out")), None).warm_up()  # type: ignore[arg-type]


@pytest.mark.parametrize("dies", ["before_marker", "after_marker"])
def test_replica_dies_with_a_commit_queued(tmp_path, ray_local, dies):
    """Shard A's commit is queued when the replica dies on shard B's poison row."""
    from pipeline.backend import StubBackendFactory
    from pipeline.executor import run_job

    class SlowCommits:  # defined here so Ray ships it by value to the replica
        """The first replica's commits sleep before (or after) creating the marker; later ones are normal."""

        def __init__(self, flag: str, dies: str):
            self.flag, self.dies = flag, dies
            self.stub = StubBackendFactory(cost_per_row_s=0.15)

        def __call__(self, job):
            import os

            import pipeline.sink as sink

            try:
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return self.stub(job)
            orig, dies = sink.write_and_commit, self.dies

            def slow(*args, **kwargs):
                if dies == "before_marker":
                    time.sleep(3.0)
                won = orig(*args, **kwargs)
                if dies == "after_marker":
                    time.sleep(3.0)
                return won
            sink.write_and_commit = slow
            return self.stub(job)

    prompts = [f"p{i}" for i in range(8)]
    prompts[7] = "crash __POISON__"  # the last row of shard B: A's marker (if made) is long on disk
    write_prompts(tmp_path / "in.parquet", prompts)
    out = tmp_path / "out"
    m = run_job(spec(str(tmp_path / "in.parquet"), str(out), resources={"replicas": 1}),
                backend_factory=SlowCommits(str(tmp_path / "flag"), dies), progress=False)
    t = read_results(str(out))
    assert_exactly_once(t, [f"in.parquet#{i}" for i in range(8)])
    status = dict(zip(t.column("id").to_pylist(), t.column("status").to_pylist()))
    assert [status[f"in.parquet#{i}"] for i in range(7)] == ["ok"] * 7 and status["in.parquet#7"] == "error"
    a = json.loads((out / "_commits" / "shard-00000-000000000.json").read_text())
    # B and its pieces fail 5 times (B twice, then split: rows 6-7 once, row 7 twice). Each later shard
    # commits ~0.45 s before the next crash, so only the first replica's slow commit can be lost.
    if dies == "after_marker":  # the marker existed: A is done, not redone, not charged a retry
        assert a["attempt"] == 1 and m["retries"] == 5
    else:  # lost with its replica: re-leased and committed by a later attempt
        assert a["attempt"] >= 2 and m["retries"] >= 6
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(
        json.loads(p.read_text())["file"].split("/")[1] for p in (out / "_commits").iterdir())
    assert m["replica_restarts"] >= 1
