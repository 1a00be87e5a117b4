"""The coordinator's rules (pipeline/coordinator.py) without Ray: leases to replica slots, commit reports,
lost replicas and their queued commits, overdue leases, crash loops, giving up on a row, and a seeded
simulation of whole jobs under faults (every shard committed once, every row counted once)."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from pipeline.coordinator import (
    FLUSH,
    IDLE,
    STARTING,
    CommitPieces,
    Coordinator,
    GiveUp,
    Slot,
    WorkResult,
    WorkUnit,
)
from pipeline.shards import Shard


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _shards(n: int, rows: int = 4) -> list[Shard]:
    return [Shard(f"s{i}", "f", "f", i * rows, rows) for i in range(n)]


def _coord(shards: list[Shard], replicas: int = 1, **kw) -> tuple[Coordinator, Clock]:
    clock = Clock()
    args = {"max_attempts": 2, "backoff_s": 0.0, "lease_timeout_s": 10.0, **kw}
    return Coordinator(shards, clock=clock, replicas=replicas, **args), clock


def _stats(rows: int) -> dict:
    return {"rows": rows, "tokens": 8 * rows}


def _up(c: Coordinator) -> Slot:
    slot = c.slots[0]
    c.ready(slot)
    return slot


def test_leases_go_only_to_ready_idle_replicas():
    c, _ = _coord(_shards(3), replicas=2)
    a, b = c.slots
    assert c.lease(a) is None and c.live == 0  # starting: it would sit on the lease
    c.ready(a)
    u = c.lease(a)
    assert isinstance(u, WorkUnit) and (u.shard.id, u.mode, u.attempt) == ("s0", "commit", 1)
    assert c.lease(a) is None  # one lease at a time
    c.ready(b)
    assert c.lease(b).shard.id == "s1" and c.live == 2 and c.queued == 1


def test_a_shard_is_done_when_its_commit_is_reported_not_when_generated():
    c, _ = _coord(_shards(1))
    s = _up(c)
    c.lease(s)
    assert c.work_done(s, WorkResult([], _stats(4))) == []
    assert s.state == IDLE and not c.done and c.pending_shards(s) == ["s0"] and c.rows == 0
    assert c.lease(s) == FLUSH  # nothing to lease, a commit queued: the replica reports it
    assert c.lease(s) is None
    assert c.work_done(s, WorkResult([{"shard_id": "s0", "attempt": 1, "won": False}])) == []
    # lost the race to another attempt: committed either way, counted once, no retry
    assert c.done and (c.rows, c.tokens, c.retries) == (4, 32, 0) and c.pending_shards(s) == []
    assert c.lease(s) is None


def test_a_work_answer_may_report_its_own_commit():
    # Replica.work queues the commit, then reports the commits finished so far: a fast commit is this one.
    c, _ = _coord(_shards(1))
    s = _up(c)
    c.lease(s)
    assert c.work_done(s, WorkResult([{"shard_id": "s0", "attempt": 1, "won": True}], _stats(4))) == []
    assert c.done and c.pending_shards(s) == [] and c.lease(s) is None and (c.rows, c.retries) == (4, 0)


def test_a_flush_that_leaves_a_commit_unreported_retries_it():
    # A flush waits for every queued commit, so no report will come for what it left: retried (first
    # writer wins), never flushed again forever.
    c, _ = _coord(_shards(1))
    s = _up(c)
    c.lease(s)
    c.work_done(s, WorkResult([], _stats(4)))
    assert c.lease(s) == FLUSH
    assert c.work_done(s, WorkResult([])) == [] and c.pending_shards(s) == [] and c.retries == 1
    u = c.lease(s)
    assert isinstance(u, WorkUnit) and (u.shard.id, u.attempt) == ("s0", 2)


def test_a_failed_commit_is_retried_after_backoff():
    c, clock = _coord(_shards(1), backoff_s=1.0)
    s = _up(c)
    c.lease(s)
    c.work_done(s, WorkResult([], _stats(4)))
    c.lease(s)
    assert c.work_done(s, WorkResult([{"shard_id": "s0", "attempt": 1, "error": "OSError: disk"}])) == []
    assert not c.done and c.retries == 1 and c.pending_shards(s) == [] and c.rows == 0
    assert c.lease(s) is None and c.idle_wait_s() == 1.0  # backoff_s * 2**(tries - 1)
    clock.t = 1.0
    again = c.lease(s)
    assert (again.shard.id, again.attempt, again.tries) == ("s0", 2, 1)


def test_a_lost_replica_fails_its_lease_and_judges_its_queued_commits_by_their_markers():
    c, _ = _coord(_shards(3))
    s = _up(c)
    for _ in range(2):  # s0 and s1 generated, their commits queued on the replica
        c.lease(s)
        c.work_done(s, WorkResult([], _stats(4)))
    c.lease(s)  # s2 in flight
    assert c.pending_shards(s) == ["s0", "s1"]
    assert c.replica_lost(s, "replica r0.0 died: X", committed={"s0"}) == []
    assert (s.state, s.replica_id, s.unit, s.pending) == (STARTING, "r0.1", None, {})
    assert c.restarts == 1 and c.live == 0
    # s0's marker exists: done, counted, not charged; s2 (in flight) and s1 (marker missing) re-leased
    assert c.open == {"s1", "s2"} and c.rows == 4 and c.retries == 2
    assert [(u.shard.id, u.attempt) for u in (c.next(), c.next())] == [("s2", 2), ("s1", 2)]


def test_a_lost_queued_commit_given_up_names_the_loss():
    c, _ = _coord(_shards(1, rows=1), max_attempts=1)
    s = _up(c)
    c.lease(s)
    c.work_done(s, WorkResult([], _stats(1)))
    (effect,) = c.replica_lost(s, "replica r0.0 died: GET https://user:pw@host/x", set())
    assert isinstance(effect, GiveUp) and effect.unit.shard.id == "s0"
    # the reason is scrubbed before it becomes an error row
    assert effect.message == ("generation failed 1 times; last: replica r0.0 died: GET https://***@host/x "
                              "before its commit finished")


def test_a_raise_in_a_live_replica_fails_only_the_unit():
    c, _ = _coord(_shards(2))
    s = _up(c)
    c.lease(s)
    c.work_done(s, WorkResult([], _stats(4)))  # s0's commit queued
    c.lease(s)
    assert c.work_raised(s, "replica r0.0 raised: RuntimeError: x") == []
    assert s.state == IDLE and c.pending_shards(s) == ["s0"] and (c.retries, c.restarts) == (1, 0)
    assert c.lease(s).attempt == 2  # s1 again (no backoff here)


def test_leases_past_the_timeout_are_overdue_flushes_included():
    c, clock = _coord(_shards(2), replicas=2)
    a, b = c.slots
    c.ready(a)
    c.ready(b)
    c.lease(a)
    clock.t = 5.0
    c.lease(b)
    clock.t = 10.0
    assert c.overdue() == []  # exactly lease_timeout_s old is not yet overdue
    clock.t = 10.5
    assert c.overdue() == [a]
    c.work_done(b, WorkResult([], _stats(4)))
    assert c.lease(b) == FLUSH
    clock.t = 21.0
    assert c.overdue() == [a, b]
    c.replica_lost(a, "lease exceeded shard_timeout_s=10.0", set())
    assert c.overdue() == [b]  # a is starting again

    never, clock = _coord(_shards(1), lease_timeout_s=None)
    s = _up(never)
    never.lease(s)
    clock.t = 1e9
    assert never.overdue() == []


def test_a_crash_loop_stops_the_job_and_a_ready_replica_resets_the_count():
    c, _ = _coord(_shards(1), max_start_deaths=3)
    s = c.slots[0]
    for _ in range(2):
        c.start_died(s, "ActorDiedError: boom")
        c.replica_lost(s, "replica replaced", set())
    c.ready(s)  # up at last: later deaths start counting again
    c.replica_lost(s, "replica r0.2 died: X", set())
    for _ in range(2):
        c.start_died(s, "ActorDiedError: boom")
        c.replica_lost(s, "replica replaced", set())
    with pytest.raises(RuntimeError, match="slot 0 died 3 times while starting: ActorDiedError: boom"):
        c.start_died(s, "ActorDiedError: boom")
    assert c.restarts == 5


def test_nothing_running_and_nothing_queued_is_a_stall():
    c, _ = _coord(_shards(1))
    c.lease(_up(c))
    with pytest.raises(RuntimeError, match="stalled with 1 shards open"):
        c.idle_wait_s()


def test_a_poison_row_is_given_up_and_its_shard_committed_from_pieces():
    c, _ = _coord([Shard("s", "f", "f", 10, 2)])
    s = _up(c)
    deaths, committed, messages = 0, [], []
    while not c.done:
        u = c.lease(s)
        assert isinstance(u, WorkUnit)
        rows = list(range(u.piece.start, u.piece.start + u.piece.num_rows))
        if 11 in rows:  # row 11 kills its replica every time
            deaths += 1
            effects = c.replica_lost(s, f"replica {s.replica_id} died: poison", set())
            c.ready(s)
        else:
            out = pa.table({"r": [str(r) for r in rows]})
            effects = c.work_done(s, WorkResult([], _stats(len(rows)), out))
        while effects:
            e = effects.pop(0)
            if isinstance(e, GiveUp):
                messages.append(e.message)
                effects += c.piece_rows(e.unit, pa.table({"r": ["error"]}), tokens=0)
            else:
                assert isinstance(e, CommitPieces)
                committed.append(([v for t in e.tables for v in t.column("r").to_pylist()], e.attempt))
                c.committed(e.unit)
    assert deaths == 2 + 2  # the whole shard twice, then the 1-row piece twice (row 10 is fine)
    assert messages == ["generation failed 2 times; last: replica r0.3 died: poison"]
    assert committed == [(["10", "error"], 6)]  # attempts 1-2 whole, 3-4 pieces, 5 the retried row
    assert (c.rows, c.tokens, c.restarts, c.retries) == (2, 8, 4, 4)


@pytest.mark.parametrize("seed", range(8))
def test_simulated_jobs_under_faults_commit_every_shard_once(seed):
    """Replicas die (queued commits landing or not), hang past the lease timeout, raise, fail commits and
    die while starting, at random; two rows kill every replica that touches them."""
    rng = random.Random(seed)
    shards = [Shard(f"{i:02d}", "f", "f", 4 * i, 4) for i in range(12)]
    poison = {9, 30}
    c, clock = _coord(shards, replicas=3, lease_timeout_s=5.0, max_start_deaths=1000)
    markers: dict[str, list[str]] = {}  # the store: shard id -> committed rows, first writer wins
    queued: dict[int, list] = {s.index: [] for s in c.slots}  # commits queued on each slot's replica
    lost = 0

    def commit(shard_id: str, rows: list[str]) -> bool:
        return markers.setdefault(shard_id, rows) is rows

    def carry_out(effects: list) -> None:
        while effects:
            e = effects.pop(0)
            if isinstance(e, GiveUp):
                p = e.unit.piece
                rows = pa.table({"r": [f"error{r}" for r in range(p.start, p.start + p.num_rows)]})
                effects += c.piece_rows(e.unit, rows, tokens=0)
            else:
                commit(e.unit.shard.id, [v for t in e.tables for v in t.column("r").to_pylist()])
                c.committed(e.unit)

    def finish_commits(slot: Slot, n: int) -> list[dict]:
        reports = []
        for shard_id, attempt, rows in queued[slot.index][:n]:
            rep = {"shard_id": shard_id, "attempt": attempt}
            if rng.random() < 0.1:
                rep["error"] = "OSError: injected"
            else:
                rep["won"] = commit(shard_id, rows)
            reports.append(rep)
        del queued[slot.index][:n]
        return reports

    def lose(slot: Slot, reason: str) -> None:
        nonlocal lost
        lost += 1
        for shard_id, _, rows in queued[slot.index]:  # what the replica committed before it died
            if rng.random() < 0.5:
                commit(shard_id, rows)
        queued[slot.index] = []
        carry_out(c.replica_lost(slot, reason, set(c.pending_shards(slot)) & set(markers)))

    for _ in range(5000):
        if c.done:
            break
        for slot in c.slots:
            if slot.state == STARTING:
                if rng.random() < 0.2:
                    c.start_died(slot, "died starting")
                    lose(slot, "replica replaced")
                else:
                    c.ready(slot)
                continue
            order = c.lease(slot)
            if order == FLUSH:
                carry_out(c.work_done(slot, WorkResult(finish_commits(slot, len(queued[slot.index])))))
                continue
            if order is None:
                continue
            rows = range(order.piece.start, order.piece.start + order.piece.num_rows)
            fate = rng.random()
            if poison & set(rows) or fate < 0.1:
                lose(slot, "died")
            elif fate < 0.15:
                carry_out(c.work_raised(slot, "raised"))
            elif fate < 0.2:
                pass  # hangs: the lease stays out until it is overdue
            else:  # like Replica.work: queue this unit's commit, then report what has finished, this one too
                out = [str(r) for r in rows]
                if order.mode == "commit":
                    queued[slot.index].append((order.shard.id, order.attempt, out))
                reports = finish_commits(slot, rng.randint(0, len(queued[slot.index])))
                if order.mode == "rows":
                    result = WorkResult(reports, _stats(len(out)), pa.table({"r": out}))
                else:
                    result = WorkResult(reports, _stats(len(out)))
                carry_out(c.work_done(slot, result))
        clock.t += 1.0
        for slot in c.overdue():
            lose(slot, "lease exceeded")
    assert c.done, f"seed {seed}: not done, open {sorted(c.open)}"
    assert sorted(markers) == [s.id for s in shards]
    for s in shards:
        got = markers[s.id]
        assert len(got) == s.num_rows, (seed, s.id, got)
        for r, v in zip(range(s.start, s.start + s.num_rows), got):
            assert v == f"error{r}" if r in poison else v in (str(r), f"error{r}"), (seed, s.id, got)
    assert c.rows == 48 and c.restarts == lost  # every row counted once, every loss a restart
