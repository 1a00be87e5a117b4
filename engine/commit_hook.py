"""The canvas commit decision: which tokens a finished canvas commits (`CommitHook`), argmax by default.

Owns: the CommitHook protocol and `ArgmaxCommit`, the reference behaviour (commit the argmax
of the last denoising step's processed logits). Structured output plugs a constrained hook in here; the
denoising loop calls `commit` once per row per committed canvas, in canvas order, and nowhere else.

Legend: C canvas length, V vocabulary.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class CommitHook(Protocol):
    def initial_state(self) -> object: ...

    def commit(
        self, logits_CV: torch.Tensor, state: object, *, tokens_left: int, last_canvas: bool
    ) -> tuple[torch.Tensor, object, bool]:
        """logits_CV: fp32 processed logits of the row's last denoising step for this canvas.

        Returns (tokens_C long, new_state, finished); finished=True ends the row as if it hit EOS (the hook
        fills the tokens after its DONE point itself).
        """
        ...


class ArgmaxCommit:
    """The reference commit: argmax of the last step's logits; never finishes a row by itself.

    The loop does not call it (it already tracks that argmax, frozen rows included); it is the protocol's
    executable definition and the baseline the structured-output hooks are tested against.
    """

    def initial_state(self) -> object:
        return None

    def commit(
        self, logits_CV: torch.Tensor, state: object, *, tokens_left: int, last_canvas: bool
    ) -> tuple[torch.Tensor, object, bool]:
        return logits_CV.argmax(dim=-1), state, False


def is_argmax(hook: CommitHook | None) -> bool:
    """True when the loop can commit its tracked argmax without calling the hook (no logits kept)."""
    return hook is None or type(hook) is ArgmaxCommit
