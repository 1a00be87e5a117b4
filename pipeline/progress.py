"""The driver's progress line on stderr: rows done of the plan, rows/s and tokens/s of this run, ETA,
retries, replica restarts and live replicas, at most every `every_s` seconds. Pure bookkeeping, no I/O
but the print; the injectable clock keeps it testable."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    every_s = 2.0

    def __init__(self, total_rows: int, done_rows: int, enabled: bool,
                 clock: Callable[[], float] = time.monotonic):
        """`done_rows` were committed by earlier runs; rates count only this run's rows."""
        self.total, self.done, self.enabled, self.clock = total_rows, done_rows, enabled, clock
        self.t0, self.last, self.rows_run, self.tokens = clock(), float("-inf"), 0, 0

    def add(self, rows: int, tokens: int) -> None:
        self.done += rows
        self.rows_run += rows
        self.tokens += tokens

    def line(self, retries: int, restarts: int, live: int, replicas: int) -> str:
        el = max(1e-9, self.clock() - self.t0)
        rate = self.rows_run / el
        eta = f"{(self.total - self.done) / rate:.0f}s" if rate > 0 else "?"
        pct = 100.0 * self.done / max(1, self.total)
        return (f"[dgbatch] {self.done}/{self.total} rows ({pct:.1f}%) | {rate:.1f} rows/s | "
                f"{self.tokens / el:.1f} tok/s | ETA {eta} | retries {retries} | "
                f"restarts {restarts} | replicas {live}/{replicas}")

    def maybe_print(self, force: bool, retries: int, restarts: int, live: int, replicas: int) -> None:
        now = self.clock()
        if self.enabled and (force or now - self.last >= self.every_s):
            self.last = now
            print(self.line(retries, restarts, live, replicas), file=sys.stderr, flush=True)
