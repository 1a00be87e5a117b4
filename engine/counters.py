"""Deterministic work counters of the generation loops (what bench/ and the tests read beside times).

Owns: `Counters`, and the single doorway for device->host reads in the loops (`host_bool`, `host_list`),
so host synchronisations are counted where they happen instead of estimated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class Counters:
    decoder_forwards: int = 0  # decoder passes (each over the whole decoder batch)
    decoder_rows: int = 0  # sum over decoder passes of the rows in the batch
    live_forwards: int = 0  # row-forwards where the row was not frozen (the reference's per-row count)
    encoder_forwards: int = 0
    canvases: int = 0  # committed canvases (lockstep batch: per batch; engine: per row)
    steps: int = 0  # denoising steps (loop iterations)
    logit_passes: float = 0.0  # passes over a [rows, C, V] logits tensor, summed over steps
    host_syncs: int = 0  # device->host reads inside generation loops
    steady_syncs: int = 0  # of those, reads inside the step loop (between canvas events)

    def step(self, rows: int, passes: float) -> None:
        self.decoder_forwards += 1
        self.decoder_rows += rows
        self.steps += 1
        self.logit_passes += passes

    def host_bool(self, t: torch.Tensor, steady: bool = True) -> bool:
        self.host_syncs += 1
        self.steady_syncs += int(steady)
        return bool(t)

    def host_list(self, t: torch.Tensor, steady: bool = False) -> list:
        self.host_syncs += 1
        self.steady_syncs += int(steady)
        return t.tolist()

    def summary(self) -> dict[str, float]:
        d = asdict(self)
        s = max(self.steps, 1)
        d["passes_per_step"] = self.logit_passes / s
        d["syncs_per_step"] = self.host_syncs / s
        d["steady_syncs_per_step"] = self.steady_syncs / s
        return d
