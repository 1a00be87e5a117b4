"""Node loss: a multi-node Ray (ray.cluster_utils.Cluster) loses the node under a replica mid-job."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from pipeline_helpers import assert_exactly_once, spec, write_prompts

from pipeline import read_results
from pipeline.backend import StubBackendFactory
from pipeline.executor import run_job


@pytest.fixture(scope="module")
def cluster(aws_env):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # the session's single-node Ray (ours): restarted on demand by ray_local
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [c.add_node(num_cpus=2, resources={"fake_gpu": 2}) for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return -1


def _node_of(pid: int, workers) -> object | None:
    """The Cluster node whose raylet spawned process `pid` (walks up the process tree)."""
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in workers}
    while pid > 1:
        if pid in raylets:
            return raylets[pid]
        pid = _parent(pid)
    return None


def test_node_loss_mid_job(tmp_path, cluster):
    c, workers = cluster
    write_prompts(tmp_path / "in.parquet", [f"p{i}" for i in range(32)])
    pids = tmp_path / "pids"
    factory = StubBackendFactory(cost_per_row_s=0.08, pid_dir=str(pids))
    job = spec(str(tmp_path / "in.parquet"), str(tmp_path / "out"), resources={"shard_rows": 4})
    result: dict = {}
    th = threading.Thread(target=lambda: result.update(run_job(job, backend_factory=factory, progress=False)))
    th.start()
    commits = tmp_path / "out" / "_commits"
    end = time.monotonic() + 120
    while not (commits.exists() and len(list(commits.iterdir())) >= 1):
        assert time.monotonic() < end, "no commit"
        time.sleep(0.05)
    victim = None
    for p in sorted(pids.iterdir(), key=os.path.getmtime):
        victim = _node_of(int(p.name), workers)
        if victim is not None:
            break
    assert victim is not None, "no replica found on a worker node"
    c.remove_node(victim, allow_graceful=False)
    th.join(180)
    assert not th.is_alive() and result["replica_restarts"] >= 1
    assert_exactly_once(read_results(str(tmp_path / "out")), [f"in.parquet#{i}" for i in range(32)])
    assert result["rows_by_status"]["ok"] == 32
