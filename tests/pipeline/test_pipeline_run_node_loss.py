"""Node loss: a multi-node Ray (ray.cluster_utils.Cluster) loses the node under a replica mid-job."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import run_losing_a_replica


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

    def lose_a_worker_node(pids: list[int]) -> None:  # the node of the oldest replica on a worker node
        victim = next((n for n in (_node_of(pid, workers) for pid in pids) if n is not None), None)
        assert victim is not None, "no replica found on a worker node"
        c.remove_node(victim, allow_graceful=False)

    run_losing_a_replica(tmp_path, 32, 0.08, lose_a_worker_node)
