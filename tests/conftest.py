"""Session-wide test settings: one torch thread (timings on a shared 2-core machine), private Ray dir."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Ray keeps sockets and logs under RAY_TMPDIR; a private one keeps tests away from any other Ray on the box.
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="dgbatch-ray-"))

import torch  # noqa: E402

torch.set_num_threads(1)
