"""ConstraintHook: the engine's CommitHook for structured output (see /work/briefs/engine_api.md).

Per row and canvas the engine hands over the last denoising step's logits [C, V]; the hook replaces the
argmax commit with the best valid path (dp.best_path) from the DFA state carried in ConstraintState. Once
the path reaches DONE (an EOS after a complete match) the remaining positions are pad, and `finished`
tells the engine to end the row. The hook object is shared by rows; per-row data lives in the state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from pipeline.constraints.choice import LabelScorer
from pipeline.constraints.dfa import TokenDFA
from pipeline.constraints.dp import DPTables, best_path


@dataclass(frozen=True)
class ConstraintState:
    """Per-row constraint state carried between canvases."""

    dfa_state: int = 0  # 0 is the start; n_states is DONE
    done: bool = False
    tokens: int = 0  # constrained tokens committed so far (EOS included, pads not)
    label_scores: dict | None = None  # choice: label -> log-probability (first canvas)

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
    ):
        if max_new_tokens is not None and int(dfa.dist[0]) > max_new_tokens:
            raise ValueError(
                f"{description}: needs at least {int(dfa.dist[0])} new tokens; "
                f"max_new_tokens={max_new_tokens}"
            )
        self.dfa = dfa
        self.tables = DPTables.from_dfa(dfa)
        self.pad_token_id = int(pad_token_id)
        self.max_new_tokens = max_new_tokens
        self.canvas_length = canvas_length
        self.scorer = scorer
        self.description = description
        self.vocab = vocab  # token id -> bytes, for exact decoding (pipeline.constraints.decode_text)

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
        logits = logits_CV[:n].detach().to("cpu", torch.float32)
        if self.scorer is not None and state.label_scores is None:
            state = replace(state, label_scores=self.scorer.scores(logits))
        path = best_path(
            self.tables, logits, state.dfa_state, tokens_after=int(tokens_left) - n, must_finish=last_canvas
        )
        done_idx = self.tables.done
        emitted = 0
        for i, tok in enumerate(path.tokens):
            if path.states[i] == done_idx:  # after the EOS: pad
                break
            out[i] = tok
            emitted += 1
        end = path.states[-1]
        final = end == done_idx or (end < done_idx and bool(self.dfa.final[end]))
        finished = end == done_idx or (final and (last_canvas or int(tokens_left) - n <= 0))
        new = replace(state, dfa_state=end, done=finished, tokens=state.tokens + emitted)
        return out, new, finished
