"""ConstraintHook: the engine's CommitHook for structured output (protocol: engine/commit_hook.py).

Per row and canvas the engine hands over the last denoising step's logits [C, V]; the hook replaces the
argmax commit with the best valid path (dp.best_path) from the DFA state carried in ConstraintState. Once
the path reaches DONE (an EOS after a complete match) the remaining positions are pad, and `finished`
tells the engine to end the row. The hook object is shared by rows; per-row data lives in the state.

`steering` (steering.py; default off; `SteeringOptions.kept()` = valid-only sampling, measured in
bench/RESULTS.md, is opt-in through the job spec) makes the hook also act inside the denoising loop through
the CommitHook protocol's optional per-step methods (`steering_on`, `seed_canvas`, `steer`; the loop calls
them only when `steering_on` is true). Cost: one DP per live row and step instead of one per canvas; off,
the hook is commit-only.
`with_pins` gives a row its own hook that honours the row's pinned tokens (engine/pins.py): checked
feasible before any work (InfeasibleConstraint names the pin), and at each commit the DP takes this canvas'
pins (the engine hands it logits where a pin is the only allowed token) and the row's later pins (scored 0
where free, so the path maximises this canvas subject to the rest staying possible). Steering's per-step
paths see this canvas' pins only.
`track_argmax` records whether the unconstrained argmax of every commit already was the valid path
(ConstraintState.argmax_valid: the DP changed nothing).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch

from constraints.choice import LabelScorer
from constraints.dfa import TokenDFA
from constraints.dp import DPTables, best_path, pin_conflict, pinned_M
from constraints.steering import Skeleton, SteeringOptions, dfa_columns, path_tokens, steer_tokens
from engine.pins import FREE, Pins


class InfeasibleConstraint(ValueError):
    """The constraint cannot be completed within max_new_tokens (message names the minimum length)."""


def require_budget(dfa: TokenDFA, max_new_tokens: int | None, description: str) -> int:
    """The fewest new tokens `dfa` needs (dist[0]); InfeasibleConstraint when it exceeds max_new_tokens (None:
    no budget to check). The one feasibility rule: constraints.check_feasible (validation before work) and
    ConstraintHook (the replica) both call it on the automaton they already hold."""
    need = int(dfa.dist[0])
    if max_new_tokens is not None and need > max_new_tokens:
        raise InfeasibleConstraint(
            f"{description} needs at least {need} new tokens, but max_new_tokens={max_new_tokens}; "
            f"raise max_new_tokens to {need} or more"
        )
    return need


@dataclass(frozen=True)
class ConstraintState:
    """Per-row constraint state carried between canvases."""

    dfa_state: int = 0  # 0 is the start; n_states is DONE
    done: bool = False
    tokens: int = 0  # constrained tokens committed so far (EOS included, pads not)
    label_scores: dict | None = None  # choice: label -> log-probability (first canvas)
    argmax_valid: bool | None = None  # track_argmax: every commit's raw argmax was the valid path so far

    @property
    def chosen(self) -> str | None:
        """The best-scoring label (choice only)."""
        if not self.label_scores:
            return None
        return max(self.label_scores, key=self.label_scores.get)


class ConstraintHook:
    """CommitHook that keeps every row inside a compiled constraint."""

    def __init__(
        self,
        dfa: TokenDFA,
        *,
        pad_token_id: int,
        max_new_tokens: int | None = None,
        canvas_length: int | None = None,
        scorer: LabelScorer | None = None,
        description: str = "constraint",
        vocab: list[bytes | None] | None = None,
        steering: SteeringOptions | None = None,
        track_argmax: bool = False,
    ):
        require_budget(dfa, max_new_tokens, description)
        self.dfa = dfa
        self.tables = DPTables.from_dfa(dfa)
        self.pad_token_id = int(pad_token_id)
        self.max_new_tokens = max_new_tokens
        self.canvas_length = canvas_length
        self.scorer = scorer
        self.description = description
        self.vocab = vocab  # token id -> bytes, for exact decoding (constraints.decode_text)
        self.steering = SteeringOptions.off() if steering is None else steering
        if not isinstance(self.steering, SteeringOptions):
            raise ValueError(f"{description}: steering must be a SteeringOptions, got {steering!r}")
        self.track_argmax = bool(track_argmax)
        self._skeleton = Skeleton(dfa, vocab, self.steering.seed_space_after)
        self.pins: Pins | None = None
        self.pin_budget = 0  # the row's max_new_tokens (offsets of its canvases follow from tokens_left)

    def with_pins(self, pins: Pins, max_new_tokens: int) -> ConstraintHook:
        """A copy for one row with these pins; InfeasibleConstraint when no output of the constraint holds
        them within max_new_tokens (the message names the first pin it cannot pass)."""
        last = pins.last
        if last < 0:
            return self
        if last >= max_new_tokens:
            raise InfeasibleConstraint(
                f"{self.description}: the pin at output offset {last} lies past "
                f"max_new_tokens={max_new_tokens}"
            )
        M = pinned_M(self.tables, pins.tokens[: last + 1], self.pad_token_id)
        at = pin_conflict(self.tables, M, 0, max_new_tokens - last - 1, last + 1 >= max_new_tokens)
        if at is not None:
            before = [i for i, t in enumerate(pins.tokens[: min(at, last) + 1]) if t != FREE]
            where = (
                f"the pin at output offset {before[-1]} (token {pins.tokens[before[-1]]})"
                if at <= last and before else "these pins together"
            )
            raise InfeasibleConstraint(
                f"{self.description}: {where} cannot be part of a valid output within "
                f"max_new_tokens={max_new_tokens}"
            )
        new = copy.copy(self)
        new.pins, new.pin_budget = pins, int(max_new_tokens)
        return new

    def with_options(
        self, steering: SteeringOptions | None = None, *, track_argmax: bool | None = None
    ) -> ConstraintHook:
        """A copy sharing the compiled tables, with other steering options and / or argmax tracking (None:
        as this hook)."""
        new = copy.copy(self)
        new.steering = self.steering if steering is None else steering
        if not isinstance(new.steering, SteeringOptions):
            raise ValueError(f"{self.description}: steering must be a SteeringOptions, got {steering!r}")
        if track_argmax is not None:
            new.track_argmax = bool(track_argmax)
        new._skeleton = Skeleton(self.dfa, self.vocab, new.steering.seed_space_after)
        return new

    @property
    def min_tokens(self) -> int:
        return int(self.dfa.dist[0])

    def initial_state(self) -> ConstraintState:
        return ConstraintState()

    def commit(
        self, logits_CV: torch.Tensor, state: ConstraintState, *, tokens_left: int, last_canvas: bool
    ) -> tuple[torch.Tensor, ConstraintState, bool]:
        """Tokens [C] for this canvas, the carried state, and whether the constraint is complete."""
        C = logits_CV.shape[0]
        out = torch.full((C,), self.pad_token_id, dtype=torch.long)
        if state.done:
            return out, state, True
        n = max(0, min(C, int(tokens_left)))
        if n == 0:
            return out, state, True
        if int(self.tables.dist[state.dfa_state]) > int(tokens_left):
            raise ValueError(
                f"{self.description}: needs at least {int(self.tables.dist[state.dfa_state])} more "
                f"tokens, only {int(tokens_left)} left (set max_new_tokens higher)"
            )
        full = logits_CV[:n].detach().to("cpu", torch.float32)
        logits = dfa_columns(self.dfa, full)
        if self.scorer is not None and state.label_scores is None:
            state = replace(state, label_scores=self.scorer.scores(full))
        pin_n, tail_M, after = None, None, int(tokens_left) - n
        if self.pins is not None:
            off = self.pin_budget - int(tokens_left)  # this canvas' first output offset
            pin_n = list(self.pins.tokens[off : off + n])
            pin_n += [FREE] * (n - len(pin_n))
            tail = self.pins.tokens[off + C : self.pins.last + 1]
            if tail:
                tail_M, after = pinned_M(self.tables, tail, self.pad_token_id), after - len(tail)
        path = best_path(
            self.tables, logits, state.dfa_state, tokens_after=after, must_finish=last_canvas, tail_M=tail_M,
            pin_n=pin_n, pad=self.pad_token_id,
        )
        done_idx = self.tables.done
        out, emitted = path_tokens(path, n, C, self.pad_token_id, done_idx)
        end = path.states[-1]
        final = end == done_idx or (end < done_idx and bool(self.dfa.final[end]))
        finished = end == done_idx or (final and (last_canvas or int(tokens_left) - n <= 0))
        new = replace(state, dfa_state=end, done=finished, tokens=state.tokens + emitted)
        if self.track_argmax:
            # the DP changed nothing iff its emitted tokens are the raw argmax (the DONE tail is don't-care)
            same = bool(torch.equal(full[:emitted].argmax(dim=-1), out[:emitted]))
            new = replace(new, argmax_valid=same and state.argmax_valid is not False)
        return out, new, finished

    # -- optional per-step steering (engine/denoise.py calls these only when steering_on) ----------------
    @property
    def steering_on(self) -> bool:
        return self.steering.any

    def seed_canvas(
        self, canvas_C: torch.Tensor, state: ConstraintState, *, tokens_left: int, last_canvas: bool
    ) -> torch.Tensor | None:
        """The first step's input canvas with the skeleton's tokens at its start (None: leave it)."""
        if not self.steering.seed_canvas or state.done:
            return None
        ids = self._skeleton.seed(state.dfa_state, min(canvas_C.shape[0], int(tokens_left)))
        if not ids:
            return None
        out = canvas_C.clone()
        out[: len(ids)] = torch.tensor(ids, dtype=out.dtype, device=out.device)
        return out

    def steer(
        self,
        logits_CV: torch.Tensor,
        argmax_C: torch.Tensor,
        keep_C: torch.Tensor,
        sampled_C: torch.Tensor,
        state: ConstraintState,
        *,
        tokens_left: int,
        last_canvas: bool,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(argmax_C, sampled_C) after the step's steering (None: unchanged). constrained_stop: the stop rule
        sees the best valid path as the step's argmax; valid_sampling: kept positions take its tokens."""
        if not self.steering.per_step or state.done:
            return None
        path = steer_tokens(
            self.tables,
            dfa_columns(self.dfa, logits_CV),
            state.dfa_state,
            tokens_left=tokens_left,
            last_canvas=last_canvas,
            pad=self.pad_token_id,
        )
        if path is None:
            return None
        path = path.to(argmax_C.device)
        if self.steering.constrained_stop:
            argmax_C = path
        if self.steering.valid_sampling:
            sampled_C = torch.where(keep_C, path, sampled_C)
        return argmax_C, sampled_C
