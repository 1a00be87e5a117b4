"""Session-wide test settings: one torch thread (timings on a shared 2-core machine), private Ray dir, and the
order of the modules that share the session's local Ray."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Ray keeps sockets and logs under RAY_TMPDIR; a private one keeps tests away from any other Ray on the box.
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="dgbatch-ray-"))

import torch  # noqa: E402

torch.set_num_threads(1)

_TESTS = Path(__file__).parent
# Starting a local Ray costs 10-18 s on the 2-core box. The pipeline tests start one (ray_local in
# tests/pipeline/conftest.py) and keep it; the constraints' end-to-end jobs join a running one (ray_up in
# test_e2e_job.py) but would otherwise start and stop their own; the node-loss test shuts the shared one down
# for its multi-node cluster, and whatever runs after it starts another. So: the pipeline tests, then the
# end-to-end jobs, then node loss, last. Each still runs alone (starting what it needs): only the order
# changes.
_LAST = (_TESTS / "pipeline", _TESTS / "constraints" / "test_e2e_job.py",
         _TESTS / "pipeline" / "test_pipeline_run_node_loss.py")


def _ray_rank(path: Path) -> int:
    """0 for tests that start no shared Ray; else 1 + the index of the last group in _LAST holding `path`."""
    return max((i + 1 for i, p in enumerate(_LAST) if path == p or p in path.parents), default=0)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _ray_rank(Path(item.path)))  # stable: the order within a group is kept
