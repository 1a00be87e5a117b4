"""The driver's progress line on stderr: rows done of the plan, rows/s and tokens/s of this run, ETA,
retries, replica restarts and live replicas, at most every `every_s` seconds. Pure bookkeeping, no I/O
but the print; the figures come in as `Counts` (the coordinator's tallies) and the injectable clock keeps
it testable."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Counts:
    """This run's figures so far: rows and tokens finished, retries, restarts, replicas up of those asked."""

    rows: int
    tokens: int
    retries: int
    restarts: int
    live: int
    replicas: int


class Progress:
    every_s = 2.0

    def __init__(self, total_rows: int, done_rows: int, enabled: bool,
                 clock: Callable[[], float] = time.monotonic):
        """`done_rows` were committed by earlier runs; rates count only this run's rows."""
        self.total, self.done_before, self.enabled, self.clock = total_rows, done_rows, enabled, clock
        self.t0, self.last = clock(), float("-inf")

    def line(self, c: Counts) -> str:
        el = max(1e-9, self.clock() - self.t0)
        done = self.done_before + c.rows
        rate = c.rows / el
        eta = f"{(self.total - done) / rate:.0f}s" if rate > 0 else "?"
        pct = 100.0 * done / max(1, self.total)
        return (f"[dgbatch] {done}/{self.total} rows ({pct:.1f}%) | {rate:.1f} rows/s | "
                f"{c.tokens / el:.1f} tok/s | ETA {eta} | retries {c.retries} | "
                f"restarts {c.restarts} | replicas {c.live}/{c.replicas}")

    def maybe_print(self, c: Counts, force: bool = False) -> None:
        now = self.clock()
        if self.enabled and (force or now - self.last >= self.every_s):
            self.last = now
            print(self.line(c), file=sys.stderr, flush=True)
