"""The canvas commit: which tokens a finished canvas commits (`CommitHook`, argmax by default) and how they
enter the sequence (`finish_row`: EOS / length / pad), in one function both loops call (`commit_canvas`), and
the committed tokens' log-probabilities for rows that report them.

Owns: the CommitHook protocol and its optional per-step steering methods (`SteeringHook`), `ArgmaxCommit`,
the reference behaviour (commit the argmax of the last denoising step's processed logits), and the
end-of-canvas rule. Structured output plugs a constrained hook in here; engine/generate.py (reference mode)
and engine/fast.py (fast mode) call `commit_canvas` once per row per committed canvas, in canvas order, and
nowhere else.

Log-probabilities (Request.logprobs): a committed token's log-probability is log_softmax of the processed
(softcapped, temperature-divided) logits of the step the commit read, at that token: the row's last live
denoising step of the canvas (the last step, or the step adaptive stopping froze the row at), at the
temperature of that step (the schedule's t_min + span/N at the last step). For the argmax commit that is the
log-probability of the argmax, which the step tracks beside it (engine/denoise.py CanvasBatch.logp_BC, from
the vocabulary head's statistics: engine/heads.py argmax_logprob); a hook's tokens are scored against the
same logits the hook read (log_softmax of logits_CV), however unlikely its choice. A token the end-of-canvas
rule replaced by pad was not chosen by the commit: its log-probability is NaN. No [C, V] work per step for
any of it: the kept logits a hook reads are those engine/kept_logits.py keeps for hooks anyway.

Legend: C canvas length, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from engine import pins as pinning
from engine.params import GenerationParams, first_stop


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


@runtime_checkable
class SteeringHook(CommitHook, Protocol):
    """A CommitHook that may also act at every denoising step of its row (engine/denoise.py), when
    `steering_on`: rewrite the first step's input canvas, and each step's argmax (what the stop rule compares)
    and kept tokens. Each returns None to leave things as they are."""

    @property
    def steering_on(self) -> bool: ...

    def seed_canvas(
        self, canvas_C: torch.Tensor, state: object, *, tokens_left: int, last_canvas: bool
    ) -> torch.Tensor | None: ...

    def steer(
        self, logits_CV: torch.Tensor, argmax_C: torch.Tensor, keep_C: torch.Tensor, sampled_C: torch.Tensor,
        state: object, *, tokens_left: int, last_canvas: bool,
    ) -> tuple[torch.Tensor, torch.Tensor] | None: ...


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


def steers(hook: CommitHook | None) -> bool:
    """True when the hook asks to act at every step (SteeringHook with steering_on)."""
    return isinstance(hook, SteeringHook) and bool(hook.steering_on)


def finish_row(
    tokens: list[int],
    params: GenerationParams,
    *,
    prev_finished: bool,
    last_canvas: bool,
    hook_done: bool = False,
) -> tuple[list[int], bool, bool]:
    """Apply the reference's end-of-canvas rule to one row's committed canvas.

    Returns (tokens as they enter the sequence, finished, hit_eos). Rows finished before get a canvas of pad
    (when pad is set); a canvas with EOS has everything after its first EOS replaced by pad (when set); the
    last canvas of the budget finishes every row; a commit hook may finish the row itself.
    """
    pad = params.pad_token_id
    if prev_finished and pad is not None:
        tokens = [pad] * len(tokens)
    first = first_stop(tokens, params.eos_token_ids)
    hit_eos = first is not None
    if hit_eos and pad is not None:
        tokens = tokens[: first + 1] + [pad] * (len(tokens) - first - 1)
    finished = prev_finished or hit_eos or last_canvas or hook_done
    return tokens, finished, hit_eos


@dataclass(frozen=True)
class Committed:
    """One row's committed canvas."""

    tokens: list[int]  # as they enter the sequence (finish_row applied)
    state: object  # the hook's state after this canvas
    finished: bool
    hit_eos: bool
    hook_done: bool  # the hook finished the row
    logprobs: list[float] | None = None  # per token of `tokens` (NaN where finish_row put a pad); None: not
    # asked for


def token_logprobs(logits_CV: torch.Tensor, tokens: list[int]) -> list[float]:
    """log_softmax(logits_CV) at each position's token -> C floats (a hook's choice, however unlikely)."""
    t_C1 = torch.tensor(tokens, dtype=torch.long, device=logits_CV.device)[:, None]
    return torch.log_softmax(logits_CV.float(), dim=-1).gather(-1, t_C1)[:, 0].tolist()


def commit_canvas(
    hook: CommitHook | None,
    state: object,
    argmax: list[int],
    logits_CV: Callable[[], torch.Tensor],
    params: GenerationParams,
    *,
    tokens_left: int,
    last_canvas: bool,
    prev_finished: bool = False,
    argmax_logprobs: Callable[[], list[float]] | None = None,
    pin_C: list[int] | None = None,
    hold: int = 0,
) -> Committed:
    """Commit one row's canvas: its tracked argmax, or the hook's choice from the last live step's logits
    (`logits_CV()`, built only when the hook is called), then the end-of-canvas rule. A hook's exception
    propagates (the fast engine turns it into its row's error).

    argmax_logprobs: None when the row reports no log-probabilities; else the tracked log-probabilities of
    `argmax` (called for the argmax commit only: a hook's tokens are scored from the logits it read).

    pin_C: the canvas' pins (engine/pins.py; None: none): a hook reads logits where they are the only allowed
    tokens, and a hook that moves one fails its row; hold: positions before the row's last pin (a stop token
    at a free one of them becomes pad)."""
    tokens, hook_done, logprobs = argmax, False, None
    if not is_argmax(hook):
        logits = pinning.mask_logits(logits_CV(), pin_C)
        toks, state, hook_done = hook.commit(logits, state, tokens_left=tokens_left, last_canvas=last_canvas)
        tokens = [int(t) for t in toks]
        moved = [i for i, p in enumerate(pin_C or ()) if p != pinning.FREE and tokens[i] != p]
        if moved:
            raise ValueError(
                f"the commit hook put token {tokens[moved[0]]} on the pin at canvas position {moved[0]} "
                f"(token {pin_C[moved[0]]}): the constraint and the pins disagree"
            )
        if argmax_logprobs is not None:
            logprobs = token_logprobs(logits, tokens)
    elif argmax_logprobs is not None:
        logprobs = list(argmax_logprobs())
    chosen = tokens
    tokens = pinning.hold_stops(tokens, pin_C, hold, params.eos_token_ids, params.pad_token_id)
    tokens, finished, hit_eos = finish_row(
        tokens, params, prev_finished=prev_finished, last_canvas=last_canvas, hook_done=hook_done
    )
    if logprobs is not None:
        logprobs = [lp if t == c else math.nan for lp, t, c in zip(logprobs, tokens, chosen)]
    return Committed(tokens, state, finished, bool(hit_eos), hook_done, logprobs)
