"""The Ray side, and the only file under pipeline/ that imports Ray: the replica actor and the driver.

`run_job(spec)`: validate (fail before any work), plan or resume (`_plan.json`, `_commits/`; a finished
job is returned untouched), keep this run's record (pipeline/runs.py), start `resources.replicas` actors
that each build their backend once, lease units to idle replicas until every shard is committed, and
finalize (manifest, `_SUCCESS`). A local Ray it starts is watched by pipeline/reaper.py.

Three parts, each with one job:
- the coordinator (pipeline/coordinator.py) decides: what is leased next and to which replica, what a
  failure, a lease past `shard_timeout_s`, a lost replica or a lost queued commit means (retry, split,
  give up, restart, stop the job);
- the sink (pipeline/sink.py) writes: replicas commit their shards, the driver only the bisected ones
  (`commit_pieces`) and error rows for rows given up on (`given_up_rows`);
- `_Driver` moves messages: leases from the coordinator to the replicas (`work`, `flush`), their answers
  and deaths back to the coordinator, and what the coordinator answers to Ray (kill, start) or the sink.

Fault handling lives in the coordinator, not in Ray's retry knobs: actors run with max_restarts=0 and
max_task_retries=0, so a dead replica surfaces as one failed unit; the driver kills what is left of it
(a hung or half-dead replica must not commit later) and starts a fresh one in its slot. A replica that
cannot build its backend (bad model, bad constraint) says so in its `ready()` answer, a typed
`ReplicaInitError`, and the job stops with it: retrying cannot help.

Overlap: a replica hands each finished shard to a background committer (write, fsync, commit marker) and
returns at once, so the shard's commit runs while its next lease generates; the coordinator counts the
shard done only when the replica reports its marker created (pipeline/coordinator.py, "Slots").
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from pipeline.backend import EngineBackendFactory
from pipeline.coordinator import (
    STARTING,
    CommitPieces,
    Coordinator,
    Effect,
    GiveUp,
    Slot,
    WorkResult,
    WorkUnit,
)
from pipeline.generator import RowGenerator, job_columns, output_schema
from pipeline.logs import get_logger
from pipeline.metrics import Metrics
from pipeline.plan import load_or_create_plan
from pipeline.preview import Preview
from pipeline.progress import Counts, Progress
from pipeline.reaper import Reaper
from pipeline.redact import scrub
from pipeline.runs import RunLog, new_run_id
from pipeline.shards import read_shard
from pipeline.sink import (
    BackgroundCommitter,
    commit_pieces,
    committed,
    finalize,
    finished_manifest,
    given_up_rows,
    marker_fields,
    markers_exist,
    next_attempts,
    write_job,
)
from pipeline.spec import JobSpec, SpecError
from pipeline.storage import Storage
from pipeline.validate import validate_job


class ReplicaInitError(SpecError):
    """Building a replica's backend raised: the job cannot run (a replica's `ready()` carries it)."""


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
        self.columns = job_columns(self.spec)
        self.init_error: ReplicaInitError | None = None
        try:
            backend = factory(self.spec)
        except Exception as exc:  # noqa: BLE001 - reported by ready(); the driver stops the job
            self.init_error = ReplicaInitError(
                scrub(f"replica {replica_id}: cannot build backend: {type(exc).__name__}: {exc}"))
            return
        self.gen = RowGenerator(self.spec, backend, self.metrics)
        self.gen.warm_up()  # one-off library costs go to start-up, like the model load
        self.committer = BackgroundCommitter(self.storage, on_done=self._log_commit)

    def ready(self) -> dict:
        """{"pid", "node", "init_error": the ReplicaInitError if building the backend raised, else None}."""
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "init_error": self.init_error}

    def work(self, unit: WorkUnit) -> WorkResult:
        """Generate one unit. A whole shard is queued for commit (reported later in `commits`)."""
        started = time.time()
        st = self.spec.storage
        got = read_shard(unit.piece, self.columns, st.endpoint_url, st.options)
        out, stats = self.gen.process(got.table, file_rel=unit.piece.file_rel, first_row=unit.piece.start,
                                      attempt=unit.attempt, unreadable=got.unreadable)
        if unit.mode == "rows":
            return WorkResult(self.committer.take(), stats.to_json(), out)
        finished = time.time()
        self.metrics.shard_seconds(finished - started)
        self.committer.submit(unit.shard.id, unit.attempt, out, marker_fields(
            stats.to_json(), unit.shard, replica_id=self.replica_id, started_at=started, finished_at=finished,
            bisected=False, run_id=self.run_id))
        return WorkResult(self.committer.take(), stats.to_json())

    def flush(self) -> WorkResult:
        """Wait for the queued commits and report them (the driver calls this when it has no lease)."""
        return WorkResult(self.committer.take(wait=True))

    def _log_commit(self, shard_id: str, attempt: int, won: bool, marker: dict) -> None:
        self.log.bind(shard=shard_id, attempt=attempt).info(
            "shard committed" if won else "shard already committed by another attempt",
            extra={"rows": marker.get("rows"), "tokens": marker.get("tokens")})


def run_job(spec: JobSpec | dict, *, backend_factory: Any = None, ray_address: str | None = None,
            progress: bool = True, preview: Preview | None = None) -> dict[str, Any]:
    """Run (or resume) a job to completion; returns the manifest. Raises SpecError on unusable input.

    With `preview`, the job's first `preview.rows` rows run into `preview.scratch` instead, and the real
    output prefix is only read (pipeline/preview.py)."""
    real = JobSpec.parse(spec)
    spec = real if preview is None else preview.spec_for(real)
    factory = backend_factory if backend_factory is not None else EngineBackendFactory()
    is_engine = isinstance(factory, EngineBackendFactory)
    checked = validate_job(spec, check_model=is_engine,
                           identity=None if is_engine else {"backend": repr(factory)})
    if preview is not None:
        preview.check_output(real, checked)
    storage = checked.output
    if is_engine:
        from pipeline.model_path import resolve_model_path

        model_info = {"path": resolve_model_path(spec.model)[0], "label": checked.identity["label"]}
    else:
        model_info = {"path": None, "label": f"stub backend {factory!r}"}
    plan, _ = load_or_create_plan(storage, spec, checked.files, checked.identity)
    if preview is not None:
        plan = preview.first_rows(plan)
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
            res = spec.resources
            coord = Coordinator(todo, max_attempts=res.max_attempts, backoff_s=res.retry_backoff_s,
                                attempt_base=next_attempts(storage), replicas=min(res.replicas, len(todo)),
                                lease_timeout_s=res.shard_timeout_s)
            # input rows, not output rows: a marker counts generation.n samples per input row
            done_in = sum(int(c.get("input", {}).get("num_rows", c["rows"])) for c in done.values())
            prog = Progress(plan.total_rows, done_in, progress)
            started_ray = False
            if not ray.is_initialized():
                reaper = Reaper()  # what this process ran before ray.init is not the watchdog's to stop
                ray.init(address=ray_address, include_dashboard=False, log_to_driver=True)
                started_ray = True
                reaper.watch()  # if this driver dies, however it dies, what ray.init started goes too
            try:
                _Driver(spec, factory, storage, coord, runlog, prog).run()
            finally:
                if started_ray:
                    ray.shutdown()
                    reaper.done()  # a normal end: the watchdog exits and stops nothing
        first = checked.files[0]
        schema = output_schema(spec, first.schema, first.rel)
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


class _Driver:
    """Moves messages between the replicas and the coordinator until every shard is committed.

    Per slot it holds the replica's actor and at most one call in flight: `ready()` while the slot starts,
    then `work(unit)` or `flush()`. It decides nothing: it reports what Ray answered to the coordinator and
    carries out what the coordinator answers (a lease, a replica to replace, an `Effect` for the sink).
    """

    def __init__(self, spec: JobSpec, factory: Any, storage: Storage, coord: Coordinator, runlog: RunLog,
                 prog: Progress):
        self.spec, self.factory, self.storage = spec, factory, storage
        self.coord, self.runlog, self.prog = coord, runlog, prog
        res = spec.resources
        self.spec_json = spec.model_dump(mode="json")  # the replicas' spec: public_dict() is scrubbed
        self.options: dict[str, Any] = {"num_cpus": res.num_cpus_per_replica,
                                        "num_gpus": res.num_gpus_per_replica}
        if res.custom_resources:
            self.options["resources"] = dict(res.custom_resources)
        self.metrics = Metrics("driver")
        self.actors: dict[int, Any] = {}  # slot index -> its replica's actor handle
        self.calls: dict[int, Any] = {}  # slot index -> the ObjectRef of its call in flight
        self._metered = (0, 0)  # (retries, restarts) already counted in the metrics

    def run(self) -> None:
        for slot in self.coord.slots:
            self._start(slot)
        try:
            while not self.coord.done:
                self._lease()
                if not self.calls:  # every replica idle, nothing ready to lease yet
                    time.sleep(min(self.coord.idle_wait_s(), 1.0))
                    continue
                ready, _ = ray.wait(list(self.calls.values()), num_returns=1, timeout=1.0)
                for slot in self.coord.slots:
                    ref = self.calls.get(slot.index)
                    if ref is not None and ref in ready:
                        self._receive(slot, ref)
                for slot in self.coord.overdue():
                    self._replace(slot, f"lease exceeded shard_timeout_s={self.coord.lease_timeout_s}")
                self._report()
            self._report(force=True)
        finally:
            for actor in self.actors.values():
                _kill(actor)

    def _start(self, slot: Slot) -> None:
        actor = Replica.options(**self.options).remote(self.spec_json, self.factory, slot.replica_id,
                                                       self.runlog.run_id)
        self.actors[slot.index], self.calls[slot.index] = actor, actor.ready.remote()

    def _lease(self) -> None:
        for slot in self.coord.slots:
            order = self.coord.lease(slot)
            if order is not None:
                actor = self.actors[slot.index]
                call = actor.work.remote(order) if isinstance(order, WorkUnit) else actor.flush.remote()
                self.calls[slot.index] = call
        self.metrics.queue_depth(self.coord.queued)

    def _receive(self, slot: Slot, ref: Any) -> None:
        del self.calls[slot.index]
        if slot.state == STARTING:
            self._started(slot, ref)
            return
        try:
            result = ray.get(ref, timeout=60)
        except RayActorError as exc:
            self._replace(slot, f"replica {slot.replica_id} died: {_first_line(exc)}")
            return
        except RayTaskError as exc:
            if isinstance(exc.cause, SpecError):
                raise exc.cause from None
            self._carry_out(self.coord.work_raised(
                slot, f"replica {slot.replica_id} raised: {_first_line(exc.cause or exc)}"))
            return
        except GetTimeoutError:
            self.calls[slot.index] = ref  # not answered after all: wait on it again
            return
        self._carry_out(self.coord.work_done(slot, result))

    def _started(self, slot: Slot, ref: Any) -> None:
        """The answer to `ready()`: up, unable to build its backend (the job stops), or dead."""
        try:
            answer = ray.get(ref)
        except RayActorError as exc:
            why = _first_line(exc)
        else:
            if answer["init_error"] is not None:
                raise answer["init_error"]
            self.coord.ready(slot)
            return
        self.coord.start_died(slot, why)  # raises on a crash loop
        self._replace(slot, "replica replaced")

    def _replace(self, slot: Slot, reason: str) -> None:
        """Kill the slot's replica (before its queued commits are judged), report it lost, start another."""
        _kill(self.actors[slot.index])
        self.calls.pop(slot.index, None)
        pending = self.coord.pending_shards(slot)
        done = markers_exist(self.storage, pending) if pending else set()
        self._carry_out(self.coord.replica_lost(slot, reason, done))
        self._start(slot)

    def _carry_out(self, effects: list[Effect]) -> None:
        todo = list(effects)
        while todo:
            effect = todo.pop(0)
            if isinstance(effect, GiveUp):
                unit = effect.unit
                rows = given_up_rows(self.spec, unit.piece, unit.attempt, effect.message)
                todo += self.coord.piece_rows(unit, rows, tokens=0)
            elif isinstance(effect, CommitPieces):
                commit_pieces(self.storage, effect.unit.shard, effect.attempt, effect.tables,
                              self.runlog.run_id)
                self.coord.committed(effect.unit)

    def _report(self, force: bool = False) -> None:
        """Progress line, metrics and the run record from the coordinator's tallies."""
        c = self.coord
        self.metrics.retries(c.retries - self._metered[0])
        for _ in range(c.restarts - self._metered[1]):
            self.metrics.replica_restart()
        self._metered = (c.retries, c.restarts)
        self.prog.maybe_print(Counts(c.rows, c.tokens, c.retries, c.restarts, c.live,
                                     self.spec.resources.replicas), force)
        self.runlog.update(c.retries, c.restarts)


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
