"""Every decision of the driver: what runs next, on which replica, what each outcome means. No Ray, no I/O.

The driver (pipeline/executor.py) moves messages: it tells the coordinator what happened (a replica is
ready, died, answered, or raised) and carries out what the coordinator answers: a lease to send, a replica
to kill and start again, error rows to write (`GiveUp`), a bisected shard to commit (`CommitPieces`).
The clock is injectable, so every rule below is tested without Ray
(tests/pipeline/test_pipeline_coordinator.py).

Units. A `WorkUnit` is a whole shard (mode "commit": the replica writes and commits it) or a piece of a
shard being bisected (mode "rows": the replica returns its rows to the driver). The rules:
- a whole shard is retried with exponential backoff until it has failed `max_attempts` times;
- then it is split in two pieces; a failing piece of more than one row is split again at once;
- a single row gets `max_attempts` tries, then is given up: the driver writes it as an error row whose
  message names the tries and the last failure (`GiveUp`);
- when every piece of a shard has rows, the driver writes the shard once and commits it (`CommitPieces`).
So a row that kills its replica every time costs O(max_attempts + log2(shard_rows)) replica crashes, its
shard-mates are generated normally, and nothing loops forever. Attempt numbers are unique per shard
(they name the attempt files), starting above those a previous run left behind.

Slots. One `Slot` per replica; it is starting (its `ready()` not yet answered), idle, working (a unit
leased) or flushing (waiting for the replica's queued commits). The rules:
- leases go only to idle slots (a starting replica would sit on a lease); an idle slot with nothing to
  lease but commits still queued on its replica is asked to flush them;
- a generated whole shard stays the slot's `pending` until the replica reports its commit (in the same
  answer when the commit was that fast): a report that the marker exists (the attempt won or lost the
  race) finishes the shard, a failed commit fails the unit; a flush waits for every queued commit, so a
  shard it leaves unreported fails too (retried; first writer wins), never flushed again forever;
- a lease (work or flush) older than `lease_timeout_s` is overdue: the driver kills that replica;
- a replica lost (died, killed as overdue, died while starting) fails its in-flight unit; each pending
  shard is done if its commit marker exists and failed otherwise (re-leased: first writer still wins, so
  exactly-once does not depend on the overlap of commit and next lease); the slot starts a fresh replica
  under the next generation number and the loss counts as a restart;
- a slot whose replica dies `max_start_deaths` times in a row before it is ready stops the job: a crash
  loop, which retrying cannot help.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from pipeline.redact import scrub
from pipeline.shards import Shard

STARTING, IDLE, WORKING, FLUSHING = "starting", "idle", "working", "flushing"
FLUSH = "flush"  # what `lease` answers when the replica should report its queued commits


@dataclass
class WorkUnit:
    shard: Shard  # the whole shard (its id names files and markers)
    piece: Shard  # the rows to process: the shard itself, or a sub-range when bisecting
    mode: str  # "commit" | "rows"
    attempt: int  # unique per shard; names data/shard-<id>.attempt-<k>.parquet
    tries: int = 0  # failures of this exact unit so far

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.shard.id, self.piece.start, self.piece.num_rows)


@dataclass
class WorkResult:
    """A replica's answer to `work` or `flush`.

    `commits`: reports of the background commits finished since its last answer (pipeline/sink.py
    BackgroundCommitter.take). For `work` also the unit's `stats` (BatchStats.to_json: rows, tokens, ...)
    and, in mode "rows", the generated `rows`.
    """

    commits: list[dict[str, Any]]
    stats: dict[str, Any] | None = None
    rows: pa.Table | None = None


@dataclass(frozen=True)
class GiveUp:
    """Write `unit`'s rows as error rows carrying `message`, then report them with `piece_rows`."""

    unit: WorkUnit
    message: str


@dataclass(frozen=True)
class CommitPieces:
    """Commit `unit`'s shard from `tables` (its pieces in row order) as `attempt`, then report `committed`."""

    unit: WorkUnit
    tables: list[pa.Table]
    attempt: int


Effect = GiveUp | CommitPieces


@dataclass
class Slot:
    index: int
    generation: int = 0
    state: str = STARTING
    unit: WorkUnit | None = None  # the unit of the in-flight work (None while flushing)
    leased_at: float = 0.0
    init_deaths: int = 0  # consecutive deaths before becoming ready
    # (shard id, attempt) -> (unit, stats): generated, commit queued on the replica, not yet reported
    pending: dict[tuple[str, int], tuple[WorkUnit, dict[str, Any]]] = field(default_factory=dict)

    @property
    def replica_id(self) -> str:
        return f"r{self.index}.{self.generation}"


@dataclass
class _Bisect:
    pieces: dict[int, pa.Table] = field(default_factory=dict)  # piece start -> output rows
    rows_done: int = 0


class Coordinator:
    def __init__(self, shards: list[Shard], *, max_attempts: int, backoff_s: float,
                 attempt_base: dict[str, int] | None = None, clock: Callable[[], float] = time.monotonic,
                 max_backoff_s: float = 60.0, replicas: int = 0, lease_timeout_s: float | None = None,
                 max_start_deaths: int = 5):
        self.max_attempts, self.backoff_s, self.max_backoff_s = max_attempts, backoff_s, max_backoff_s
        self.lease_timeout_s, self.max_start_deaths = lease_timeout_s, max_start_deaths
        self.clock = clock
        self._attempt = dict(attempt_base or {})
        self._queue: list[tuple[float, int, WorkUnit]] = []  # (ready_at, seq, unit)
        self._seq = itertools.count()
        self._bisect: dict[str, _Bisect] = {}
        self.open: set[str] = set()  # shards not yet committed
        self.slots = [Slot(i) for i in range(replicas)]
        # this run's tallies: failed units, replicas lost, rows and tokens finished (progress, run record)
        self.retries = self.restarts = self.rows = self.tokens = 0
        for s in shards:
            self.open.add(s.id)
            self._push(WorkUnit(s, s, "commit", self._next_attempt(s.id)), 0.0)

    # -- queue -----------------------------------------------------------------------------------------
    def _next_attempt(self, shard_id: str) -> int:
        self._attempt[shard_id] = self._attempt.get(shard_id, 0) + 1
        return self._attempt[shard_id]

    def _push(self, unit: WorkUnit, delay: float) -> None:
        heapq.heappush(self._queue, (self.clock() + delay, next(self._seq), unit))

    def next(self) -> WorkUnit | None:
        """Lease the next ready unit, or None if nothing is ready now."""
        if self._queue and self._queue[0][0] <= self.clock():
            return heapq.heappop(self._queue)[2]
        return None

    def ready_in(self) -> float | None:
        """Seconds until the next queued unit is ready (0 if one is), None if the queue is empty."""
        return max(0.0, self._queue[0][0] - self.clock()) if self._queue else None

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def done(self) -> bool:
        return not self.open

    # -- unit outcomes ---------------------------------------------------------------------------------
    def committed(self, unit: WorkUnit) -> None:
        """A commit-mode unit committed (by us or by a faster attempt): the shard is finished."""
        self.open.discard(unit.shard.id)

    def failed(self, unit: WorkUnit) -> str:
        """Record a failed unit: 'retry', 'split' or 'give_up' (one row: the caller writes an error row)."""
        self.retries += 1
        unit.tries += 1
        if unit.mode == "commit" and unit.tries < self.max_attempts:
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (unit.tries - 1))
            self._push(WorkUnit(unit.shard, unit.piece, "commit", self._next_attempt(unit.shard.id),
                                unit.tries), delay)
            return "retry"
        if unit.piece.num_rows > 1:
            self._bisect.setdefault(unit.shard.id, _Bisect())
            half = unit.piece.num_rows // 2
            for start, n in ((unit.piece.start, half), (unit.piece.start + half, unit.piece.num_rows - half)):
                self._push(WorkUnit(unit.shard, unit.shard.sub(start, n), "rows",
                                    self._next_attempt(unit.shard.id)), 0.0)
            return "split"
        self._bisect.setdefault(unit.shard.id, _Bisect())
        if unit.tries < self.max_attempts:
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (unit.tries - 1))
            retry = WorkUnit(unit.shard, unit.piece, "rows", self._next_attempt(unit.shard.id), unit.tries)
            self._push(retry, delay)
            return "retry"
        return "give_up"

    def piece_done(self, unit: WorkUnit, rows: pa.Table) -> tuple[list[pa.Table], int] | None:
        """Rows for a piece. When the shard is whole: (tables in row order, attempt number to commit as)."""
        b = self._bisect[unit.shard.id]
        if unit.piece.start in b.pieces:  # a duplicate answer (should not happen): keep the first
            return None
        b.pieces[unit.piece.start] = rows
        b.rows_done += unit.piece.num_rows  # input rows: with generation.n each gives n output rows
        if b.rows_done < unit.shard.num_rows:
            return None
        del self._bisect[unit.shard.id]
        return [b.pieces[k] for k in sorted(b.pieces)], self._next_attempt(unit.shard.id)

    def piece_rows(self, unit: WorkUnit, rows: pa.Table, tokens: int) -> list[Effect]:
        """A piece's rows (generated, or the error rows of a `GiveUp`): counted, and the shard committed
        once it is whole."""
        self.rows += unit.piece.num_rows  # input rows, as the plan counts them (progress)
        self.tokens += tokens
        whole = self.piece_done(unit, rows)
        return [] if whole is None else [CommitPieces(unit, *whole)]

    def _fail(self, unit: WorkUnit, reason: str) -> list[Effect]:
        if self.failed(unit) == "give_up":
            return [GiveUp(unit, f"generation failed {unit.tries} times; last: {scrub(reason)[:300]}")]
        return []

    def _finished(self, unit: WorkUnit, stats: dict[str, Any]) -> None:
        self.committed(unit)
        self.rows += unit.piece.num_rows  # input rows (stats["rows"] counts samples)
        self.tokens += stats["tokens"]

    # -- slots -----------------------------------------------------------------------------------------
    @property
    def live(self) -> int:
        """Replicas up (ready, whether busy or not)."""
        return sum(s.state != STARTING for s in self.slots)

    def lease(self, slot: Slot) -> WorkUnit | Literal["flush"] | None:
        """What an idle slot's replica does next: a unit, FLUSH (report queued commits), or nothing."""
        if slot.state != IDLE:
            return None
        unit = self.next()
        if unit is not None:
            slot.state, slot.unit, slot.leased_at = WORKING, unit, self.clock()
            return unit
        if slot.pending:
            slot.state, slot.unit, slot.leased_at = FLUSHING, None, self.clock()
            return FLUSH
        return None

    def ready(self, slot: Slot) -> None:
        """The slot's replica built its backend and takes leases."""
        slot.state, slot.init_deaths = IDLE, 0

    def start_died(self, slot: Slot, why: str) -> None:
        """The replica died before it was ready; raises RuntimeError on the `max_start_deaths`-th death in
        a row. Otherwise the driver replaces it (`replica_lost`)."""
        slot.init_deaths += 1
        if slot.init_deaths >= self.max_start_deaths:
            raise RuntimeError(f"replica slot {slot.index} died {slot.init_deaths} times while starting: "
                               f"{why}")

    def work_done(self, slot: Slot, result: WorkResult) -> list[Effect]:
        """The replica answered its lease (work or flush); the slot is idle again."""
        unit = slot.unit
        slot.state, slot.unit = IDLE, None
        if unit is not None:
            assert result.stats is not None, "a work answer carries the unit's stats"
            if unit.mode == "commit":  # done when its commit is reported, which may be in this very answer
                slot.pending[(unit.shard.id, unit.attempt)] = (unit, result.stats)
        effects = self._commit_reports(slot, result.commits)
        if unit is None:  # a flush waited for every queued commit: no report will come for what is left
            for left, _ in list(slot.pending.values()):
                del slot.pending[(left.shard.id, left.attempt)]
                effects += self._fail(left, f"replica {slot.replica_id}: flush did not report its commit")
            return effects
        if unit.mode == "rows":
            assert result.rows is not None, "a rows-mode answer carries the rows"
            return effects + self.piece_rows(unit, result.rows, result.stats["tokens"])
        return effects

    def _commit_reports(self, slot: Slot, reports: list[dict[str, Any]]) -> list[Effect]:
        effects: list[Effect] = []
        for rep in reports:
            unit, stats = slot.pending.pop((rep["shard_id"], rep["attempt"]), (None, None))
            if unit is None:
                continue
            if "error" in rep:
                effects += self._fail(unit, f"replica {slot.replica_id}: commit failed: {rep['error']}")
            else:  # won or lost the race: either way the shard is committed
                self._finished(unit, stats)
        return effects

    def work_raised(self, slot: Slot, reason: str) -> list[Effect]:
        """The lease raised inside a replica that is still alive: the unit failed, the slot is idle."""
        unit = slot.unit
        slot.state, slot.unit = IDLE, None
        return self._fail(unit, reason) if unit is not None else []

    def overdue(self) -> list[Slot]:
        """Slots whose lease outlived `lease_timeout_s` (a hung replica): the driver replaces them."""
        if not self.lease_timeout_s:
            return []
        now = self.clock()
        return [s for s in self.slots
                if s.state in (WORKING, FLUSHING) and now - s.leased_at > self.lease_timeout_s]

    def pending_shards(self, slot: Slot) -> list[str]:
        """Shards whose commit is queued on the slot's replica: the driver checks their markers when the
        replica is lost, and reports those that exist to `replica_lost`."""
        return sorted({unit.shard.id for unit, _ in slot.pending.values()})

    def replica_lost(self, slot: Slot, reason: str, committed: set[str]) -> list[Effect]:
        """The slot's replica is gone (killed by the driver first when it was not dead). `committed`: the
        pending shards whose marker exists. The slot then waits for a fresh replica."""
        effects = self._fail(slot.unit, reason) if slot.unit is not None else []
        for unit, stats in slot.pending.values():
            if unit.shard.id in committed:
                self._finished(unit, stats)
            else:
                effects += self._fail(unit, f"{reason} before its commit finished")
        slot.pending, slot.unit = {}, None
        slot.state, slot.generation = STARTING, slot.generation + 1
        self.restarts += 1
        return effects

    def idle_wait_s(self) -> float:
        """With every replica idle: seconds until the next queued unit is ready. Raises RuntimeError when
        nothing is queued either (nothing running, nothing queued, not done: a bookkeeping bug)."""
        wait = self.ready_in()
        if wait is None:
            raise RuntimeError(f"pipeline stalled with {len(self.open)} shards open")
        return wait
