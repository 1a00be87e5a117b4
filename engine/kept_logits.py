"""What a commit hook reads of a canvas' last live step: its processed logits, kept between steps.

Owns `KeptLogits`: the step's fp32 processed logits, or (the GPU head mode, engine/heads.py FusedHead) the
raw LM head output with the softcap and each row's temperature, processed for one row at commit by the
epilogue the materialised path runs (kernels.logit_epilogue: the same bits). Frozen rows keep the logits of
the step they froze at (`where`), and rows move between batches with the canvas batch (`select`, `cat`).

Legend: B rows, C canvas, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import kernels


@dataclass
class KeptLogits:
    x_BCV: torch.Tensor  # fp32 processed logits, or the raw LM head output when cap is set
    temp_B: torch.Tensor | None = None  # raw: each row's temperature of that step (None: 1)
    cap: float | None = None  # set: x_BCV is raw; the model's final softcap

    def row(self, b: int) -> torch.Tensor:
        """Row b's fp32 processed logits [C, V]."""
        if self.cap is None:
            return self.x_BCV[b]
        temp = None if self.temp_B is None else self.temp_B[b : b + 1]
        return kernels.logit_epilogue(self.x_BCV[b : b + 1], self.cap, temp)[0][0]

    def where(self, frozen_B: torch.Tensor, new: KeptLogits) -> KeptLogits:
        """`new`, except that frozen_B rows keep these (the logits their argmax came from)."""
        x = torch.where(frozen_B[:, None, None], self.x_BCV, new.x_BCV)
        temp = new.temp_B
        if new.cap is not None and (new.temp_B is not None or self.temp_B is not None):
            # no temperature is a temperature of 1 (x / 1 is exact) where frozen and live rows mix
            ones = torch.ones_like(frozen_B, dtype=torch.float32)
            temp = torch.where(
                frozen_B,
                self.temp_B if self.temp_B is not None else ones,
                new.temp_B.float() if new.temp_B is not None else ones,
            )
        return KeptLogits(x, temp, new.cap)

    def select(self, idx_B: torch.Tensor) -> KeptLogits:
        temp = None if self.temp_B is None else self.temp_B.index_select(0, idx_B)
        return KeptLogits(self.x_BCV.index_select(0, idx_B), temp, self.cap)

    @staticmethod
    def cat(parts: list[tuple[KeptLogits | None, int]]) -> KeptLogits | None:
        """Concatenate (kept, rows) parts; rows without kept logits get zeros (their next step overwrites
        them before any commit) and a temperature of 1."""
        ref = next((k for k, _ in parts if k is not None), None)
        if ref is None:
            return None
        V_shape = ref.x_BCV.shape[1:]
        x = torch.cat([k.x_BCV if k is not None else ref.x_BCV.new_zeros((n, *V_shape)) for k, n in parts])
        temp = None
        if any(k is not None and k.temp_B is not None for k, _ in parts):
            one = ref.x_BCV.new_ones
            temp = torch.cat([
                k.temp_B if k is not None and k.temp_B is not None else one(n, dtype=torch.float32)
                for k, n in parts
            ])
        # one model per engine: the same cap wherever it is set
        cap = next((k.cap for k, _ in parts if k is not None and k.cap is not None), None)
        return KeptLogits(x, temp, cap)
