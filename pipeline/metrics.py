"""Run metrics exported through Ray's Prometheus endpoint, with a no-op fallback outside Ray.

Owns the names, tags and kinds of every dgbatch metric. Ray exports `ray.util.metrics` objects from each
node's metrics agent (`ray start --metrics-export-port`, scraped by Prometheus; the Ray dashboard's Grafana
panels read the same series). Names below get Ray's `ray_` prefix on export, counters a `_total` suffix:

    dgbatch_rows{status}            counter    rows finished, by status (ok / invalid / error)
    dgbatch_tokens                  counter    generated tokens
    dgbatch_tokens_per_s            gauge      latest generation rate of this replica
    dgbatch_denoising_steps         counter    denoising steps taken
    dgbatch_row_denoising_steps     histogram  steps per row (mean over the rows of one call)
    dgbatch_shard_seconds           histogram  wall time per shard attempt
    dgbatch_retries                 counter    shard re-leases decided by the driver
    dgbatch_replica_restarts        counter    replica actors restarted
    dgbatch_queue_depth             gauge      shards waiting for a lease

Every series also carries `job` and `replica` tags so one Prometheus query can split by replica.

Ray is imported lazily, and only when the process already imported it: this module must stay importable
(and cheap) in processes without Ray, since only the executor file under pipeline/ imports Ray at top level.
The metric objects are created on first use after `ray.init()`; before that every call only updates the
local tallies in `Metrics.totals`, which the driver's progress line and the tests read.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

# Histogram bucket edges. Steps: a block of 32 tokens takes 1..32 steps; more blocks add up.
_STEP_BOUNDS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
_SECONDS_BOUNDS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800]
_TAG_KEYS = ("job", "replica")

# Ray metric objects are process-wide: building one per Metrics instance would register duplicates.
_LOCK = threading.Lock()
_RAY_METRICS: dict[str, Any] | None = None


def _ray_initialised() -> bool:
    """True when this process is connected to Ray (driver after ray.init, or any actor/task)."""
    ray = sys.modules.get("ray")
    if ray is None:  # never imported here, so certainly not initialised: skip the ~1 s import
        return False
    try:
        return bool(ray.is_initialized())
    except Exception:  # a half-torn-down Ray must never break the pipeline's bookkeeping
        return False


def _build_ray_metrics() -> dict[str, Any]:
    from ray.util.metrics import Counter, Gauge, Histogram

    return {
        "rows": Counter("dgbatch_rows", "Rows finished, by status", tag_keys=(*_TAG_KEYS, "status")),
        "tokens": Counter("dgbatch_tokens", "Generated tokens", tag_keys=_TAG_KEYS),
        "tokens_per_s": Gauge("dgbatch_tokens_per_s", "Generation rate (tokens/s)", tag_keys=_TAG_KEYS),
        "denoising_steps": Counter("dgbatch_denoising_steps", "Denoising steps taken", tag_keys=_TAG_KEYS),
        "row_steps": Histogram("dgbatch_row_denoising_steps", "Denoising steps per row",
                               boundaries=_STEP_BOUNDS, tag_keys=_TAG_KEYS),
        "shard_seconds": Histogram(
            "dgbatch_shard_seconds", "Wall time per shard attempt (s)", boundaries=_SECONDS_BOUNDS,
            tag_keys=_TAG_KEYS,
        ),
        "retries": Counter("dgbatch_retries", "Shard re-leases after a failed attempt", tag_keys=_TAG_KEYS),
        "replica_restarts": Counter("dgbatch_replica_restarts", "Replica actors restarted",
                                    tag_keys=_TAG_KEYS),
        "queue_depth": Gauge("dgbatch_queue_depth", "Shards waiting for a lease", tag_keys=_TAG_KEYS),
    }


def _ray_metrics() -> dict[str, Any] | None:
    """The process-wide Ray metric objects, or None while Ray is not initialised."""
    global _RAY_METRICS
    if _RAY_METRICS is not None:
        return _RAY_METRICS
    if not _ray_initialised():
        return None
    with _LOCK:
        if _RAY_METRICS is None:
            _RAY_METRICS = _build_ray_metrics()
    return _RAY_METRICS


class Metrics:
    """Records one replica's (or the driver's) metrics; safe to call with or without Ray.

    `job` and `replica_id` become tags on every series. Counts are also kept locally in `totals`
    (a plain dict) so callers without a Prometheus scrape, and tests, can read them.
    """

    def __init__(self, replica_id: str | int = "driver", job: str = "dgbatch") -> None:
        self.tags = {"job": str(job), "replica": str(replica_id)}
        self.totals: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def exporting(self) -> bool:
        """True once records go to Ray's metrics agent (Ray initialised in this process)."""
        return _ray_metrics() is not None

    def _tally(self, key: str, value: float, *, set_: bool = False) -> None:
        with self._lock:
            self.totals[key] = value if set_ else self.totals.get(key, 0) + value

    def _emit(self, name: str, method: str, value: float, extra_tags: dict[str, str] | None = None) -> None:
        metrics = _ray_metrics()
        if metrics is None:
            return
        tags = self.tags if not extra_tags else {**self.tags, **extra_tags}
        try:
            getattr(metrics[name], method)(value, tags=tags)
        except Exception:  # metrics are advisory: a closed agent socket must not fail a shard
            pass

    def rows(self, status: str, n: int = 1) -> None:
        """Count `n` finished rows with `status` (ok, invalid or error)."""
        if n <= 0:
            return
        self._tally(f"rows.{status}", n)
        self._emit("rows", "inc", n, {"status": str(status)})

    def tokens(self, n: int) -> None:
        """Count `n` generated tokens."""
        if n <= 0:
            return
        self._tally("tokens", n)
        self._emit("tokens", "inc", n)

    def tokens_per_s(self, x: float) -> None:
        """Set this replica's current generation rate (tokens per second)."""
        self._tally("tokens_per_s", float(x), set_=True)
        self._emit("tokens_per_s", "set", float(x))

    def denoising_steps(self, n: int, rows: int = 1) -> None:
        """Count `n` denoising steps taken for `rows` rows; the histogram sees the per-row mean."""
        if n <= 0:
            return
        self._tally("denoising_steps", n)
        self._emit("denoising_steps", "inc", n)
        self._emit("row_steps", "observe", n / max(1, rows))

    def shard_seconds(self, x: float) -> None:
        """Observe the wall time (seconds) of one shard attempt."""
        self._tally("shard_seconds", float(x))
        self._emit("shard_seconds", "observe", float(x))

    def retries(self, n: int = 1) -> None:
        """Count `n` shard re-leases after failed attempts."""
        if n <= 0:
            return
        self._tally("retries", n)
        self._emit("retries", "inc", n)

    def replica_restart(self) -> None:
        """Count one replica actor restart."""
        self._tally("replica_restarts", 1)
        self._emit("replica_restarts", "inc", 1)

    def queue_depth(self, n: int) -> None:
        """Set the number of shards waiting for a lease."""
        self._tally("queue_depth", n, set_=True)
        self._emit("queue_depth", "set", n)
