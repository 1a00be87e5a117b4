"""Leases, attempts, backoff and bisection: the driver's bookkeeping of which work runs next. No Ray, no I/O.

A `WorkUnit` is a whole shard (the replica writes and commits it: mode "commit") or a piece of a shard
being bisected (the replica returns its rows to the driver: mode "rows"). The rules:
- a whole shard is retried with exponential backoff until it has failed `max_attempts` times;
- then it is split in two pieces; a failing piece of more than one row is split again at once;
- a single row gets `max_attempts` tries, then gives up: the driver writes it as an error row;
- when every piece of a shard has rows, the driver writes the shard once and commits it.
So a row that kills its replica every time costs O(max_attempts + log2(shard_rows)) replica crashes, its
shard-mates are generated normally, and nothing loops forever. Attempt numbers are unique per shard
(they name the attempt files), starting above those a previous run left behind.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.shards import Shard


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
class _Bisect:
    pieces: dict[int, pa.Table] = field(default_factory=dict)  # piece start -> output rows
    rows_done: int = 0


class Coordinator:
    def __init__(self, shards: list[Shard], *, max_attempts: int, backoff_s: float,
                 attempt_base: dict[str, int] | None = None, clock: Callable[[], float] = time.monotonic,
                 max_backoff_s: float = 60.0):
        self.max_attempts, self.backoff_s, self.max_backoff_s = max_attempts, backoff_s, max_backoff_s
        self.clock = clock
        self._attempt = dict(attempt_base or {})
        self._queue: list[tuple[float, int, WorkUnit]] = []  # (ready_at, seq, unit)
        self._seq = itertools.count()
        self._bisect: dict[str, _Bisect] = {}
        self.open: set[str] = set()  # shards not yet committed
        self.retries = 0
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

    # -- outcomes --------------------------------------------------------------------------------------
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
        b.rows_done += rows.num_rows
        if b.rows_done < unit.shard.num_rows:
            return None
        del self._bisect[unit.shard.id]
        return [b.pieces[k] for k in sorted(b.pieces)], self._next_attempt(unit.shard.id)
