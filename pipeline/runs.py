"""One record per driver run, `OUT/_runs/run-<run id>.json`, and the manifest's figures across runs.

A job may take several runs: a driver killed (SIGKILL, node loss) or failed, then the same command again.
Each run's driver keeps its own record: written when it starts, again whenever its retry or restart count
changes and at least every `RunLog.every_s` seconds, and when it ends. A run that dies without warning so
leaves counts as of the last fault it saw and a wall time at most one interval short.

Rows and tokens are not counted in the record: every commit marker names the run whose driver leased its
shard (`run_id`, pipeline/sink.py), so `summarize` attributes committed rows to runs exactly, including
those that a killed run's replica committed after its driver died.

Record fields: run_id, started_at, updated_at, ended_at (null while running), outcome ("running",
"finished", "failed"), error (failed runs: the message, scrubbed), retries, replica_restarts.
In the manifest (`summarize`), a record still "running" that is not the current run becomes
"interrupted", and each run gains wall_s, rows and tokens.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from pipeline.redact import scrub, scrub_json
from pipeline.storage import Storage

RUNS = "_runs"


def new_run_id(clock: Callable[[], float] = time.time) -> str:
    """A sortable, unique id: UTC start time to the second, then 8 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock())) + "-" + uuid.uuid4().hex[:8]


class RunLog:
    """The current run's record, kept up to date in the store (mid-run writes are best effort)."""

    every_s = 5.0

    def __init__(self, storage: Storage, run_id: str, clock: Callable[[], float] = time.time):
        self.storage, self.clock = storage, clock
        now = clock()
        self.record: dict[str, Any] = {"run_id": run_id, "started_at": now, "updated_at": now,
                                       "ended_at": None, "outcome": "running", "error": None,
                                       "retries": 0, "replica_restarts": 0}
        self._written_at = float("-inf")

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    @property
    def rel(self) -> str:
        return f"{RUNS}/run-{self.run_id}.json"

    def update(self, retries: int, replica_restarts: int) -> None:
        """Record the run's counts; writes when they changed or the last write is `every_s` old."""
        changed = (retries, replica_restarts) != (self.record["retries"], self.record["replica_restarts"])
        self.record.update(retries=retries, replica_restarts=replica_restarts)
        if changed or self.clock() - self._written_at >= self.every_s:
            try:
                self._write()
            except Exception as exc:  # noqa: BLE001 - bookkeeping must not fail a job the store can still run
                print(f"[dgbatch] warning: cannot update {self.storage.uri(self.rel)}: "
                      f"{scrub(f'{type(exc).__name__}: {exc}')}", file=sys.stderr, flush=True)

    def end(self, outcome: str, error: str | None = None) -> None:
        """The run is over ("finished" or "failed"); this write is not best effort."""
        self.record.update(outcome=outcome, ended_at=self.clock(), error=scrub(error) if error else None)
        self._write()

    def fail(self, exc: BaseException) -> None:
        """The run ends with `exc`; recorded if the store allows (the job's own error is what matters)."""
        try:
            self.end("failed", f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001 - e.g. the store refused writes: the record stays "running"
            pass

    def all_runs_ending_now(self) -> list[dict[str, Any]]:
        """Every run's record (load_runs) with this one as it ends now, for the manifest."""
        ending = {**self.record, "ended_at": self.clock(), "outcome": "finished"}
        return [r for r in load_runs(self.storage) if r.get("run_id") != self.run_id] + [ending]

    def _write(self) -> None:
        self.record["updated_at"] = self.clock()
        self.storage.write_bytes(self.rel, json.dumps(scrub_json(self.record), indent=1).encode())
        self._written_at = self.clock()


def load_runs(storage: Storage) -> list[dict[str, Any]]:
    """Every run record under the prefix, oldest first (unreadable records are skipped, never fatal)."""
    out = []
    for name in storage.list(RUNS):
        if not (name.startswith("run-") and name.endswith(".json")):
            continue
        try:
            out.append(json.loads(storage.read_bytes(f"{RUNS}/{name}")))
        except (ValueError, OSError):
            continue
    return sorted(out, key=lambda r: (r.get("started_at", 0.0), r.get("run_id", "")))


def summarize(runs: list[dict[str, Any]], commits: dict[str, dict], current: str | None
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the manifest's `runs` list, its totals across runs) from run records and commit markers."""
    rows: dict[str, int] = {}
    tokens: dict[str, int] = {}
    for c in commits.values():
        rid = c.get("run_id")
        rows[rid] = rows.get(rid, 0) + int(c.get("rows", 0))
        tokens[rid] = tokens.get(rid, 0) + int(c.get("tokens", 0))
    listed = []
    for r in runs:
        end = r.get("ended_at") or r.get("updated_at") or r.get("started_at", 0.0)
        outcome = r.get("outcome", "running")
        if outcome == "running" and r.get("run_id") != current:
            outcome = "interrupted"
        listed.append({"run_id": r.get("run_id"), "started_at": r.get("started_at"),
                       "ended_at": r.get("ended_at"), "outcome": outcome, "error": r.get("error"),
                       "wall_s": round(max(0.0, end - r.get("started_at", end)), 3),
                       "rows": rows.get(r.get("run_id"), 0), "tokens": tokens.get(r.get("run_id"), 0),
                       "retries": int(r.get("retries", 0)),
                       "replica_restarts": int(r.get("replica_restarts", 0))})
    wall = sum(r["wall_s"] for r in listed)
    run_rows = sum(r["rows"] for r in listed)
    run_tokens = sum(r["tokens"] for r in listed)
    totals = {"wall_s": round(wall, 3), "retries": sum(r["retries"] for r in listed),
              "replica_restarts": sum(r["replica_restarts"] for r in listed),
              "rows_per_s": round(run_rows / wall, 3) if wall > 0 else 0.0,
              "tokens_per_s": round(run_tokens / wall, 3) if wall > 0 else 0.0}
    return listed, totals
