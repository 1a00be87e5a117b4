"""The output side: attempt files, commit markers, the manifest, _SUCCESS, orphan cleanup, reading results.

Layout under the output prefix OUT (all JSON is UTF-8, times are unix seconds as floats):

  OUT/_plan.json                       shard list + fingerprint (see pipeline.plan)
  OUT/_job.json                        {"spec": resolved job spec (no credentials exist in it), "model":
                                        {"path": resolved dir, "label": e.g. "random-weight fallback"},
                                        "fingerprint", "written_at"}
  OUT/data/shard-<id>.attempt-<k>.parquet   one attempt's rows (all statuses); only trusted if committed
  OUT/_commits/shard-<id>.json         the commit marker, created first-writer-wins. Fields:
      shard_id, file (relative to OUT), attempt, rows, rows_by_status {ok, invalid, error}, tokens,
      denoising_steps, model_s (seconds inside the model), replica_id, started_at, finished_at,
      duration_s (replica seconds for this attempt), bytes, bisected (rows came from split pieces),
      input {file, start, num_rows}, run_id (the driver run that leased the shard), fingerprint
  OUT/_runs/run-<run id>.json          one record per driver run (see pipeline.runs)
  OUT/_manifest.json                   written at the end. Fields:
      version (2), fingerprint, output, input, finished_at, shards, rows, rows_by_status, valid_pct
      (ok/rows, percent), tokens, denoising_steps, replica_seconds (sum of commit duration_s),
      runs: [{run_id, started_at, ended_at, outcome, error, wall_s, rows, tokens, retries,
              replica_restarts}] (one per driver run, oldest first; rows and tokens from the markers),
      and totals across runs: wall_s, rows_per_s, tokens_per_s, retries, replica_restarts;
      output_schema (the output table's Arrow schema, IPC bytes in base64, so a 0-row result reads back),
      files: [{shard_id, file, rows, rows_by_status, tokens, attempt, replica_id, run_id, started_at,
               finished_at, duration_s}]
  OUT/_SUCCESS                         empty; written last

Readers trust only data files named by a commit marker. A writer that loses the commit race deletes its
own data file; attempt files left without a marker are removed at finalize. Nothing else is ever deleted:
what may be is pipeline/prefix.py's rule (names this layout could have written), and a prefix holding any
other file is refused before work. Every JSON record passes through `pipeline.redact.scrub_json`.
A job whose input has no rows has no shards; it finishes with a manifest (rows 0, its output_schema) and
`read_results` returns an empty table of that schema.

`BackgroundCommitter` runs `write_and_commit` on one thread of the replica, so a shard's write + fsync +
marker overlap the next shard's generation. It changes when a commit happens, not what one is: the driver
counts a shard done only when the replica reports that its marker exists, and a replica that dies with a
commit still queued simply loses that attempt (the driver re-leases the shard unless `markers_exist`
finds its marker; first writer still wins).

The driver writes only bisected shards (pipeline/coordinator.py): `given_up_rows` reads a piece again and
makes every row an error row, `commit_pieces` joins a shard's pieces and commits them like any attempt.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.generator import error_rows, job_columns
from pipeline.outputs import STATUSES
from pipeline.plan import PLAN_FILE, Plan
from pipeline.prefix import ATTEMPT_FILE
from pipeline.redact import scrub_json
from pipeline.runs import summarize
from pipeline.shards import Shard, read_shard
from pipeline.spec import JobSpec
from pipeline.storage import Storage

COMMITS, DATA = "_commits", "data"
MANIFEST, SUCCESS, JOB = "_manifest.json", "_SUCCESS", "_job.json"


def json_bytes(record: Any) -> bytes:
    """A JSON record as written under OUT: scrubbed of anything secret-shaped (pipeline/redact.py)."""
    return json.dumps(scrub_json(record), indent=1).encode()


def data_name(shard_id: str, attempt: int) -> str:
    return f"{DATA}/shard-{shard_id}.attempt-{attempt}.parquet"


def commit_name(shard_id: str) -> str:
    return f"{COMMITS}/shard-{shard_id}.json"


def write_and_commit(storage: Storage, shard_id: str, attempt: int, table: pa.Table, marker: dict[str, Any]
                     ) -> bool:
    """Write the attempt file, then try to commit it. False (and our file deleted) if another attempt won."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    rel = data_name(shard_id, attempt)
    if not storage.create(rel, buf.getvalue()):
        # Attempt numbers are unique per run and start above any existing file on resume, so a taken
        # name means something is badly off: fail this attempt rather than touch another writer's file.
        raise FileExistsError(f"{storage.uri(rel)} already exists")
    body = {"shard_id": shard_id, "file": rel, "attempt": attempt, "rows": table.num_rows,
            "bytes": buf.tell(), **marker}
    if storage.create(commit_name(shard_id), json_bytes(body)):
        return True
    storage.delete(rel)  # lost the race (a zombie attempt or a concurrent driver): first writer wins
    return False


def marker_fields(stats: dict[str, Any], shard: Shard, *, replica_id: str, started_at: float,
                  finished_at: float, bisected: bool, run_id: str) -> dict[str, Any]:
    """The marker fields of an attempt beyond those `write_and_commit` adds (the layout above).

    `stats`: rows_by_status, tokens, denoising_steps, model_s (pipeline.generator.BatchStats.to_json).
    """
    return {**stats, "replica_id": replica_id, "started_at": started_at, "finished_at": finished_at,
            "duration_s": round(finished_at - started_at, 6), "bisected": bisected,
            "input": {"file": shard.file, "start": shard.start, "num_rows": shard.num_rows}, "run_id": run_id}


def commit_pieces(storage: Storage, shard: Shard, attempt: int, tables: list[pa.Table], run_id: str) -> bool:
    """Commit a bisected shard: its pieces' rows (in row order) as one attempt written by the driver.

    The marker tallies the joined rows (model_s and duration_s are 0: the pieces' time was spent on the
    replicas). Returns `write_and_commit`'s answer: False if another attempt committed first.
    """
    out = pa.concat_tables(tables)
    by = dict.fromkeys(STATUSES, 0)
    for s in out.column("status").to_pylist():
        by[s] += 1
    stats = {"rows_by_status": by, "tokens": int(pc.sum(out.column("num_tokens")).as_py() or 0),
             "denoising_steps": int(pc.sum(out.column("denoising_steps")).as_py() or 0), "model_s": 0.0}
    now = time.time()
    return write_and_commit(storage, shard.id, attempt, out, marker_fields(
        stats, shard, replica_id="driver", started_at=now, finished_at=now, bisected=True, run_id=run_id))


def given_up_rows(spec: JobSpec, piece: Shard, attempt: int, message: str) -> pa.Table:
    """The output rows of a piece the driver gave up on: the piece read again (for ids and passthrough,
    through the reader's salvage: pipeline/shards.py), every row an error row carrying `message`."""
    st = spec.storage
    got = read_shard(piece, job_columns(spec), st.endpoint_url, st.options)
    return error_rows(spec, got.table, file_rel=piece.file_rel, first_row=piece.start, attempt=attempt,
                      unreadable=got.unreadable, message=message)


def markers_exist(storage: Storage, shard_ids: list[str]) -> set[str]:
    """Which of `shard_ids` have a commit marker now (the listing cache is dropped first). A marker that
    cannot be checked counts as absent: the shard is re-leased, and first writer wins, so nothing doubles."""
    storage.invalidate()  # s3fs would answer from the listing cached at start
    found = set()
    for shard_id in shard_ids:
        try:
            if storage.exists(commit_name(shard_id)):
                found.add(shard_id)
        except Exception:  # noqa: BLE001 - unknown counts as not committed (see above)
            pass
    return found


class BackgroundCommitter:
    """Writes and commits finished shards on one background thread, at most one commit in flight.

    `submit` first waits for the previous commit (it had a whole shard's generation to finish, so this
    rarely blocks) and so bounds memory to one finished-but-uncommitted table. `take` hands back reports
    of finished commits, in submission order, exactly once each: {"shard_id", "attempt", "won"} or, when
    the write or commit raised, {"shard_id", "attempt", "error"}. Reports wait here until taken, so a
    caller that raises between `submit` and `take` loses none.
    """

    def __init__(self, storage: Storage, on_done: Any = None):
        """`on_done(shard_id, attempt, won, marker)` runs on the commit thread after each commit."""
        self.storage, self.on_done = storage, on_done
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dgbatch-commit")
        self._lock = threading.Lock()
        self._queue: list[tuple[str, int, Future]] = []

    def submit(self, shard_id: str, attempt: int, table: pa.Table, marker: dict[str, Any]) -> None:
        self.wait()
        fut = self._pool.submit(self._commit, shard_id, attempt, table, marker)
        with self._lock:
            self._queue.append((shard_id, attempt, fut))

    def _commit(self, shard_id: str, attempt: int, table: pa.Table, marker: dict[str, Any]) -> bool:
        won = write_and_commit(self.storage, shard_id, attempt, table, marker)
        if self.on_done is not None:
            self.on_done(shard_id, attempt, won, marker)
        return won

    def wait(self) -> None:
        """Block until every submitted commit has finished (successfully or not)."""
        with self._lock:
            futures = [f for _, _, f in self._queue]
        for f in futures:
            f.exception()  # waits; the outcome is reported by take()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def take(self, wait: bool = False) -> list[dict[str, Any]]:
        """Reports of the finished commits (all of them first if `wait`), each returned once."""
        if wait:
            self.wait()
        out = []
        with self._lock:
            while self._queue and self._queue[0][2].done():
                shard_id, attempt, fut = self._queue.pop(0)
                exc = fut.exception()
                rep: dict[str, Any] = {"shard_id": shard_id, "attempt": attempt}
                if exc is None:
                    rep["won"] = fut.result()
                else:
                    rep["error"] = f"{type(exc).__name__}: {exc}"
                out.append(rep)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def committed(storage: Storage) -> dict[str, dict]:
    """shard id -> commit marker, as the store holds them now."""
    storage.invalidate()
    out = {}
    for name in storage.list(COMMITS):
        if name.startswith("shard-") and name.endswith(".json"):
            out[name[len("shard-"):-len(".json")]] = json.loads(storage.read_bytes(f"{COMMITS}/{name}"))
    return out


def next_attempts(storage: Storage) -> dict[str, int]:
    """shard id -> highest attempt number with a data file, so a resumed run numbers attempts above it."""
    out: dict[str, int] = {}
    for name in storage.list(DATA):
        m = ATTEMPT_FILE.match(name)
        if m:
            out[m["id"]] = max(out.get(m["id"], 0), int(m["k"]))
    return out


def remove_orphans(storage: Storage, commits: dict[str, dict]) -> list[str]:
    """Delete attempt files that no commit marker names (failed or zombie attempts); returns their names.

    Only names of our attempt-file form are candidates (pipeline/prefix.py): anything else under data/ is
    not ours to delete, whatever it is.
    """
    keep = {c["file"].split("/", 1)[1] for c in commits.values()}
    removed = []
    for name in storage.list(DATA):
        if ATTEMPT_FILE.match(name) and name not in keep:
            storage.delete(f"{DATA}/{name}")
            removed.append(name)
    return removed


def write_job(storage: Storage, spec_json: dict, model_info: dict, fp: str) -> None:
    body = {"spec": spec_json, "model": model_info, "fingerprint": fp, "written_at": time.time()}
    storage.write_bytes(JOB, json_bytes(body))


def finished_manifest(storage: Storage, plan: Plan) -> dict[str, Any] | None:
    """The manifest of this plan's job if it already finished (`_SUCCESS` and a matching manifest)."""
    storage.invalidate()
    if not (storage.exists(SUCCESS) and storage.exists(MANIFEST)):
        return None
    manifest = json.loads(storage.read_bytes(MANIFEST))
    return manifest if manifest.get("fingerprint") == plan.fingerprint else None


def finalize(storage: Storage, plan: Plan, runs: list[dict[str, Any]], current_run: str | None,
             output_schema: pa.Schema) -> dict[str, Any]:
    """Every shard committed: remove orphans, write the manifest, then _SUCCESS. Returns the manifest.

    `runs` are the run records (pipeline.runs.load_runs, with the current run's own record as it ends),
    `output_schema` the schema of the output table (recorded so that a 0-row result reads back).
    """
    commits = committed(storage)
    missing = [s.id for s in plan.shards if s.id not in commits]
    if missing:
        raise RuntimeError(f"cannot finalize {storage.url}: {len(missing)} shards uncommitted, "
                           f"e.g. {missing[:3]}")
    remove_orphans(storage, commits)
    by_status = {s: sum(c["rows_by_status"].get(s, 0) for c in commits.values()) for s in STATUSES}
    rows = sum(c["rows"] for c in commits.values())
    keys = ("shard_id", "file", "rows", "rows_by_status", "tokens", "attempt", "replica_id", "run_id",
            "started_at", "finished_at", "duration_s")
    files = [{k: commits[s.id].get(k) for k in keys} for s in plan.shards]
    run_list, totals = summarize(runs, commits, current_run)
    manifest = {
        "version": 2, "fingerprint": plan.fingerprint, "output": storage.url, "input": plan.input,
        "finished_at": time.time(), "shards": len(plan.shards), "rows": rows, "rows_by_status": by_status,
        "valid_pct": round(100.0 * by_status["ok"] / rows, 3) if rows else 0.0,
        "tokens": sum(c.get("tokens", 0) for c in commits.values()),
        "denoising_steps": sum(c.get("denoising_steps", 0) for c in commits.values()),
        "replica_seconds": round(sum(c.get("duration_s", 0.0) for c in commits.values()), 3),
        **totals, "runs": run_list,
        "output_schema": base64.b64encode(output_schema.serialize().to_pybytes()).decode(),
        "files": files,
    }
    storage.write_bytes(MANIFEST, json_bytes(manifest))
    storage.write_bytes(SUCCESS, b"")
    return manifest


def manifest_schema(manifest: dict[str, Any]) -> pa.Schema | None:
    """The output schema a manifest records (None for manifests written before it was recorded)."""
    raw = manifest.get("output_schema")
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(raw))) if raw else None


def read_results(url: str, endpoint_url: str | None = None, options: dict | None = None) -> pa.Table:
    """The committed rows under `url` as one Arrow table, in plan (input) order. Works mid-run too."""
    storage = Storage(url, endpoint_url, options)
    commits = committed(storage)
    order = {}
    if storage.exists(PLAN_FILE):
        order = {s["id"]: i for i, s in enumerate(json.loads(storage.read_bytes(PLAN_FILE))["shards"])}
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(commits[sid]["file"])))
              for sid in sorted(commits, key=lambda s: (order.get(s, len(order)), s))]
    if not tables:
        schema = None
        if storage.exists(SUCCESS) and storage.exists(MANIFEST):
            schema = manifest_schema(json.loads(storage.read_bytes(MANIFEST)))
        if schema is None:
            raise FileNotFoundError(f"{url}: no committed shards")
        return schema.empty_table()  # a finished job whose input had no rows
    return pa.concat_tables(tables, promote_options="permissive")


def status(url: str, endpoint_url: str | None = None, options: dict | None = None) -> dict[str, Any]:
    """A summary of a run in progress or done (what `dgbatch status` prints)."""
    storage = Storage(url, endpoint_url, options)
    storage.invalidate()
    if not storage.exists(PLAN_FILE):
        raise FileNotFoundError(f"{url}: no {PLAN_FILE}; not a dgbatch output prefix (or not started)")
    plan = Plan.from_json(json.loads(storage.read_bytes(PLAN_FILE)))
    commits = committed(storage)
    by_status = {s: sum(c["rows_by_status"].get(s, 0) for c in commits.values()) for s in STATUSES}
    # input rows committed, as plan.total_rows counts them (a marker's `rows` counts generation.n samples)
    done_rows = sum(int(c.get("input", {}).get("num_rows", c["rows"])) for c in commits.values())
    out = {"output": url, "fingerprint": plan.fingerprint, "shards": len(plan.shards),
           "shards_committed": len(commits), "rows": plan.total_rows, "rows_committed": done_rows,
           "rows_by_status": by_status, "tokens": sum(c.get("tokens", 0) for c in commits.values()),
           "succeeded": storage.exists(SUCCESS), "manifest": None}
    if out["succeeded"] and storage.exists(MANIFEST):
        out["manifest"] = json.loads(storage.read_bytes(MANIFEST))
    return out
