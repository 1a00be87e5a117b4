"""The Ray side, and the only file under pipeline/ that imports Ray: the replica actor and the driver loop.

`run_job(spec)`: validate (fail before any work), plan or resume (`_plan.json`, `_commits/`; a finished
job is returned untouched), keep this run's record (pipeline/runs.py), start `resources.replicas` actors
that each build their backend once, lease units to idle replicas until every shard is committed, and
finalize (manifest, `_SUCCESS`). A local Ray it starts is watched by pipeline/reaper.py.

Fault handling lives in the driver, not in Ray's retry knobs: actors run with max_restarts=0 and
max_task_retries=0, so a dead replica surfaces as one failed unit. The driver kills what is left of it,
starts a fresh one in its slot, and asks the coordinator whether to retry, split or give up. A lease that
outlives `shard_timeout_s` is treated the same way (a hung replica is killed). An exception raised while
building a replica (bad model, bad constraint) aborts the job: retrying it cannot help.

Overlap: a replica hands each finished shard to a background committer (write, fsync, commit marker) and
returns at once, so the shard's commit runs while its next lease generates. The driver keeps such shards
as the slot's `pending` and counts one done only when the replica reports its marker created (with a later
`work` result, or a `flush` when the slot has nothing else to do). If the replica dies or hangs first, a
pending shard whose marker exists is done; any other is failed like the lease it was (re-leased, first
writer wins), so exactly-once and atomic commits do not depend on the overlap.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from pipeline.backend import EngineBackendFactory
from pipeline.coordinator import Coordinator, WorkUnit
from pipeline.generator import RowGenerator, error_rows
from pipeline.logs import get_logger
from pipeline.metrics import Metrics
from pipeline.plan import load_or_create_plan
from pipeline.progress import Progress
from pipeline.reaper import Reaper
from pipeline.redact import scrub
from pipeline.runs import RunLog, new_run_id
from pipeline.shards import read_shard
from pipeline.sink import (
    BackgroundCommitter,
    commit_name,
    committed,
    finalize,
    finished_manifest,
    next_attempts,
    write_and_commit,
    write_job,
)
from pipeline.spec import JobSpec, SpecError
from pipeline.storage import Storage
from pipeline.validate import validate_job


class ReplicaInitError(RuntimeError):
    """Building a replica's backend raised: the job cannot run."""


@ray.remote(max_restarts=0, max_task_retries=0)
class Replica:
    """Loads the backend once, then turns leased units into committed shards (or rows for the driver)."""

    def __init__(self, spec_json: dict, factory: Any, replica_id: str, run_id: str):
        self.spec = JobSpec.parse(spec_json)
        self.replica_id, self.run_id = replica_id, run_id
        st = self.spec.storage
        self.storage = Storage(self.spec.output.path, st.endpoint_url, st.options)
        self.metrics = Metrics(replica_id)
        self.log = get_logger(replica_id)
        try:
            backend = factory(self.spec)
        except Exception as exc:
            msg = scrub(f"replica {replica_id}: cannot build backend: {type(exc).__name__}: {exc}")
            raise ReplicaInitError(msg) from exc
        self.gen = RowGenerator(self.spec, backend, self.metrics)
        self.columns = self.gen.input_columns()
        self.gen.warm_up()  # one-off library costs go to start-up, like the model load
        self.committer = BackgroundCommitter(self.storage, on_done=self._log_commit)

    def ready(self) -> dict:
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def work(self, unit: WorkUnit) -> dict:
        """Generate one unit. A whole shard is queued for commit (reported later in `commits`)."""
        started = time.time()
        st = self.spec.storage
        got = read_shard(unit.piece, self.columns, st.endpoint_url, st.options)
        out, stats = self.gen.process(got.table, file_rel=unit.piece.file_rel, first_row=unit.piece.start,
                                      attempt=unit.attempt, unreadable=got.unreadable)
        info = {"stats": stats.to_json(), "replica_id": self.replica_id, "started_at": started}
        if unit.mode == "rows":
            return {**info, "rows": out, "finished_at": time.time(), "commits": self.committer.take()}
        finished = time.time()
        marker = {**stats.to_json(), "replica_id": self.replica_id, "started_at": started,
                  "finished_at": finished, "duration_s": round(finished - started, 6), "bisected": False,
                  "input": _input_ref(unit), "run_id": self.run_id}
        self.metrics.shard_seconds(finished - started)
        self.committer.submit(unit.shard.id, unit.attempt, out, marker)
        return {**info, "finished_at": finished, "commits": self.committer.take()}

    def flush(self) -> dict:
        """Wait for the queued commits and report them (the driver calls this when it has no lease)."""
        return {"commits": self.committer.take(wait=True)}

    def _log_commit(self, shard_id: str, attempt: int, won: bool, marker: dict) -> None:
        self.log.bind(shard=shard_id, attempt=attempt).info(
            "shard committed" if won else "shard already committed by another attempt",
            extra={"rows": marker.get("rows"), "tokens": marker.get("tokens")})


@dataclass
class _Slot:
    index: int
    generation: int = 0
    actor: Any = None
    ready_ref: Any = None  # ready() ref until the replica has built its backend
    alive: bool = False  # leases go only to replicas that are up (a pending actor would sit on a lease)
    init_deaths: int = 0  # consecutive deaths before becoming ready (a crash loop aborts the job)
    ref: Any = None  # in-flight work() or flush() ref
    unit: WorkUnit | None = None  # the unit of the in-flight work() (None for a flush)
    leased_at: float = 0.0
    # (shard id, attempt) -> (unit, stats): generated, commit queued on the replica, not yet reported
    pending: dict = field(default_factory=dict)

    @property
    def replica_id(self) -> str:
        return f"r{self.index}.{self.generation}"


def run_job(spec: JobSpec | dict, *, backend_factory: Any = None, ray_address: str | None = None,
            progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a job to completion; returns the manifest. Raises SpecError on unusable input."""
    spec = JobSpec.parse(spec)
    factory = backend_factory if backend_factory is not None else EngineBackendFactory()
    is_engine = isinstance(factory, EngineBackendFactory)
    checked = validate_job(spec, check_model=is_engine,
                           identity=None if is_engine else {"backend": repr(factory)})
    storage = checked.output
    if is_engine:
        from pipeline.model_path import resolve_model_path

        model_info = {"path": resolve_model_path(spec.model)[0], "label": checked.identity["label"]}
    else:
        model_info = {"path": None, "label": f"stub backend {factory!r}"}
    plan, _ = load_or_create_plan(storage, spec, checked.files, checked.identity)
    finished = finished_manifest(storage, plan)
    if finished is not None:  # a rerun of a finished job changes nothing, its records included
        _say(progress, f"already finished: {finished['rows']} rows -> {storage.url}; nothing to do")
        return finished
    if not plan.shards:
        _say(True, f"warning: input {spec.input.path} has no rows; the job finishes with an empty result")
    write_job(storage, spec.public_dict(), model_info, plan.fingerprint)
    runlog = RunLog(storage, new_run_id())
    runlog.update(0, 0)
    try:
        done = committed(storage)
        todo = [s for s in plan.shards if s.id not in done]
        if todo:
            started_ray = False
            if not ray.is_initialized():
                reaper = Reaper()  # what this process ran before ray.init is not the watchdog's to stop
                ray.init(address=ray_address, include_dashboard=False, log_to_driver=True)
                started_ray = True
                reaper.watch()  # if this driver dies, however it dies, what ray.init started goes too
            try:
                _drive(spec, factory, storage, todo, plan.total_rows, sum(c["rows"] for c in done.values()),
                       progress, runlog)
            finally:
                if started_ray:
                    ray.shutdown()
                    reaper.done()  # a normal end: the watchdog exits and stops nothing
        first = checked.files[0]
        schema = RowGenerator(spec, None).output_schema(first.schema, first.rel)
        manifest = finalize(storage, plan, runlog.all_runs_ending_now(), runlog.run_id, schema)
    except BaseException as exc:
        runlog.fail(exc)
        raise
    runlog.end("finished")
    this = manifest["runs"][-1]
    _say(progress, f"done: {manifest['rows']} rows ({manifest['rows_by_status']}); this run {this['rows']} "
                   f"rows in {this['wall_s']:.1f}s -> {storage.url}")
    return manifest


def _say(show: bool, line: str) -> None:
    if show:
        print(scrub(f"[dgbatch] {line}"), file=sys.stderr, flush=True)


def _drive(spec: JobSpec, factory: Any, storage: Storage, todo: list, total_rows: int, done_rows: int,
           show: bool, runlog: RunLog) -> None:
    res = spec.resources
    coord = Coordinator(todo, max_attempts=res.max_attempts, backoff_s=res.retry_backoff_s,
                        attempt_base=next_attempts(storage))
    metrics = Metrics("driver")
    spec_json = spec.model_dump(mode="json")  # the replicas' spec: public_dict() is scrubbed for records
    options = {"num_cpus": res.num_cpus_per_replica, "num_gpus": res.num_gpus_per_replica}
    if res.custom_resources:
        options["resources"] = dict(res.custom_resources)
    slots = [_Slot(i) for i in range(min(res.replicas, len(todo)))]
    prog = Progress(total_rows, done_rows, show)
    restarts = 0

    def start(slot: _Slot) -> None:
        slot.actor = Replica.options(**options).remote(spec_json, factory, slot.replica_id, runlog.run_id)
        slot.ready_ref, slot.alive = slot.actor.ready.remote(), False
        slot.ref, slot.unit, slot.pending = None, None, {}

    def replace(slot: _Slot, reason: str = "replica replaced") -> None:
        nonlocal restarts
        try:
            ray.kill(slot.actor, no_restart=True)  # a hung or half-dead replica must not commit later
        except Exception:  # noqa: BLE001 - already gone
            pass
        lost_pending(slot, reason)
        slot.generation += 1
        restarts += 1
        metrics.replica_restart()
        start(slot)

    def lost_pending(slot: _Slot, reason: str) -> None:
        """The replica is gone with commits still queued: done if the marker exists, else failed."""
        if slot.pending:
            storage.invalidate()  # s3fs would answer from the listing cached at start
        for unit, stats in slot.pending.values():
            try:
                done = storage.exists(commit_name(unit.shard.id))
            except Exception:  # noqa: BLE001 - unknown counts as not done; a re-lease cannot duplicate
                done = False
            if done:
                coord.committed(unit)
                prog.add(stats["rows"], stats["tokens"])
            else:
                fail_unit(unit, f"{reason} before its commit finished")
        slot.pending = {}

    def commits(slot: _Slot, reports: list[dict]) -> None:
        """The replica's reports of finished background commits."""
        for rep in reports:
            unit, stats = slot.pending.pop((rep["shard_id"], rep["attempt"]), (None, None))
            if unit is None:
                continue
            if "error" in rep:
                fail_unit(unit, f"replica {slot.replica_id}: commit failed: {rep['error']}")
            else:  # won or lost the race: either way the shard is committed
                coord.committed(unit)
                prog.add(stats["rows"], stats["tokens"])

    def fail(slot: _Slot, reason: str) -> None:
        unit = slot.unit
        slot.ref, slot.unit = None, None
        if unit is not None:
            fail_unit(unit, reason)

    def fail_unit(unit: WorkUnit, reason: str) -> None:
        metrics.retries(1)
        action = coord.failed(unit)
        if action == "give_up":
            st = spec.storage
            got = read_shard(unit.piece, list(storage_columns), st.endpoint_url, st.options)
            rows = error_rows(spec, got.table, file_rel=unit.piece.file_rel, first_row=unit.piece.start,
                              attempt=unit.attempt, unreadable=got.unreadable,
                              message=f"generation failed {unit.tries} times; last: {scrub(reason)[:300]}")
            piece_rows(unit, rows, {"tokens": 0, "rows": rows.num_rows})
            prog.add(rows.num_rows, 0)

    def piece_rows(unit: WorkUnit, rows: pa.Table, stats: dict) -> None:
        whole = coord.piece_done(unit, rows)
        if whole is None:
            return
        tables, attempt = whole
        out = pa.concat_tables(tables)
        by = {s: 0 for s in ("ok", "invalid", "error")}
        for s in out.column("status").to_pylist():
            by[s] += 1
        now = time.time()
        tokens = int(pc.sum(out.column("num_tokens")).as_py() or 0)
        marker = {"rows_by_status": by, "tokens": tokens,
                  "denoising_steps": int(pc.sum(out.column("denoising_steps")).as_py() or 0),
                  "model_s": 0.0, "replica_id": "driver", "started_at": now, "finished_at": now,
                  "duration_s": 0.0, "bisected": True,
                  "input": _input_ref(unit), "run_id": runlog.run_id}
        write_and_commit(storage, unit.shard.id, attempt, out, marker)
        coord.committed(unit)

    storage_columns = RowGenerator(spec, None).input_columns()  # type: ignore[arg-type]
    for slot in slots:
        start(slot)
    try:
        while not coord.done:
            now = time.monotonic()
            for slot in slots:  # lease work to idle replicas; idle ones with queued commits flush them
                if slot.alive and slot.ref is None:
                    unit = coord.next()
                    if unit is not None:
                        slot.unit, slot.leased_at, slot.ref = unit, now, slot.actor.work.remote(unit)
                    elif slot.pending:
                        slot.unit, slot.leased_at, slot.ref = None, now, slot.actor.flush.remote()
            metrics.queue_depth(coord.queued)
            busy = [s for s in slots if s.ref is not None]
            starting = [s for s in slots if not s.alive]
            if not busy and not starting:
                wait = coord.ready_in()
                if wait is None:  # nothing queued, nothing running, not done: a bookkeeping bug
                    raise RuntimeError(f"pipeline stalled with {len(coord.open)} shards open")
                time.sleep(min(wait, 1.0))
                continue
            ready, _ = ray.wait([s.ref for s in busy] + [s.ready_ref for s in starting], num_returns=1,
                                timeout=1.0)
            for slot in starting:
                if slot.ready_ref in ready:
                    _became_ready(slot, replace)
            for slot in busy:
                if slot.ref in ready:
                    _collect(slot, coord, prog, fail, replace, piece_rows, commits)
                elif res.shard_timeout_s and time.monotonic() - slot.leased_at > res.shard_timeout_s:
                    why = f"lease exceeded shard_timeout_s={res.shard_timeout_s}"
                    fail(slot, why)
                    replace(slot, why)
            live = sum(s.alive for s in slots)
            prog.maybe_print(False, coord.retries, restarts, live, res.replicas)
            runlog.update(coord.retries, restarts)
        prog.maybe_print(True, coord.retries, restarts, sum(s.alive for s in slots), res.replicas)
    finally:
        for slot in slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
    runlog.update(coord.retries, restarts)


def _became_ready(slot: _Slot, replace) -> None:
    try:
        ray.get(slot.ready_ref)
    except RayActorError as exc:
        if "ReplicaInitError" in str(exc):
            raise SpecError(_init_message(exc)) from None
        slot.init_deaths += 1
        if slot.init_deaths >= 5:
            raise RuntimeError(f"replica slot {slot.index} died {slot.init_deaths} times while starting: "
                               f"{_first_line(exc)}") from None
        deaths = slot.init_deaths
        replace(slot)
        slot.init_deaths = deaths
        return
    slot.alive, slot.init_deaths = True, 0


def _collect(slot: _Slot, coord: Coordinator, prog: Progress, fail, replace, piece_rows, commits) -> None:
    unit = slot.unit
    try:
        result = ray.get(slot.ref, timeout=60)
    except RayActorError as exc:
        why = f"replica {slot.replica_id} died: {_first_line(exc)}"
        fail(slot, why)
        replace(slot, why)
        return
    except RayTaskError as exc:
        if isinstance(exc.cause, SpecError):
            raise exc.cause from None
        fail(slot, f"replica {slot.replica_id} raised: {_first_line(exc.cause or exc)}")
        return
    except GetTimeoutError:
        return
    slot.ref, slot.unit = None, None
    commits(slot, result["commits"])
    if unit is None:  # a flush
        return
    stats = result["stats"]
    if unit.mode == "rows":
        piece_rows(unit, result["rows"], stats)
        prog.add(stats["rows"], stats["tokens"])
    else:  # generated; counted when the replica reports the commit
        slot.pending[(unit.shard.id, unit.attempt)] = (unit, stats)


def _input_ref(unit: WorkUnit) -> dict:
    return {"file": unit.shard.file, "start": unit.shard.start, "num_rows": unit.shard.num_rows}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _init_message(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if "ReplicaInitError" in line or "SpecError" in line:
            return line.split(":", 1)[-1].strip()
    return str(exc)
