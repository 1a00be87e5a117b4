"""Optional steering of the denoising steps by a constraint (each option measured, not assumed:
bench/steering.py).

Owns: `SteeringOptions` (which options a ConstraintHook applies; all off by default), `Skeleton` (the
schema-seeded first canvas: tokens every valid output starts with from a DFA state) and `steer_tokens`
(the per-step decision of the constrained stop rule and valid-only sampling). The hook (hook.py) exposes
them to the one denoising loop through the optional CommitHook methods `seed_canvas` / `steer`
(engine/denoise.py calls them only when the hook's `steering_on` is true).

Legend: C canvas length, V vocabulary, n counted canvas positions (min(C, tokens left)).

The three options:
- constrained_stop: the adaptive stop compares the steps' best VALID paths (the DP of dp.py over the step's
  logits) instead of their raw argmax canvases, so a row stops once its constrained answer is stable.
- valid_sampling: the tokens a step keeps (the entropy-bounded commit rule's positions) are those of the
  step's best valid path, so the canvas the model sees next is consistent with the constraint.
- seed_canvas: the first step's input canvas starts with the skeleton's tokens instead of noise there.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch

from constraints.dfa import TokenDFA
from constraints.dp import DPTables, best_path

_SPACE = 0x20
_MAX_SEED_BYTES = 1024  # longer skeletons than any canvas need; bounds the walk for long forced runs


@dataclass(frozen=True)
class SteeringOptions:
    """Which steering a ConstraintHook applies at each denoising step. Default: all off (commit-only DP).

    `kept()` (valid-only sampling) is what measured better on the trained small model, but it runs one DP
    per live row and step instead of one per canvas (and, on a GPU, copies each row's logits to the host
    every step), so it is opt-in: job spec `structured_output.steering: valid_sampling` (or "kept").

    seed_space_after: the skeleton resolves an optional space (the compiled JSON whitespace `[ ]?`) by
    writing one only after these characters; ":," is Python's json.dumps layout (`{"a": 1, "b": 2}`).
    """

    constrained_stop: bool = False
    valid_sampling: bool = False
    seed_canvas: bool = False
    seed_space_after: str = ":,"

    def __post_init__(self) -> None:
        for name in ("constrained_stop", "valid_sampling", "seed_canvas"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise ValueError(f"SteeringOptions.{name}: expected a bool, got {v!r}")
        s = self.seed_space_after
        if not isinstance(s, str) or not all(" " < ch < "\x7f" for ch in s):
            raise ValueError(
                f"SteeringOptions.seed_space_after: expected printable ASCII characters (no space), got {s!r}"
            )

    @property
    def any(self) -> bool:
        return self.constrained_stop or self.valid_sampling or self.seed_canvas

    @property
    def per_step(self) -> bool:
        """True when every step needs the best valid path (one DP per live row and step)."""
        return self.constrained_stop or self.valid_sampling

    # named presets
    @classmethod
    def off(cls) -> SteeringOptions:
        return cls()

    @classmethod
    def kept(cls) -> SteeringOptions:
        """Valid-only sampling: what bench/steering.py measured to help on the trained small model; the other
        options did not (numbers in git history of bench/RESULTS.md, not rerun since)."""
        return cls(valid_sampling=True)

    @classmethod
    def all(cls) -> SteeringOptions:
        return cls(constrained_stop=True, valid_sampling=True, seed_canvas=True)

    @classmethod
    def parse(cls, text: str) -> SteeringOptions:
        """From a comma list of option names ("off", "all", or e.g. "constrained_stop,seed_canvas")."""
        names = [t.strip() for t in text.split(",") if t.strip()]
        if names in ([], ["off"]):
            return cls.off()
        if names in (["all"], ["kept"]):
            return cls.all() if names == ["all"] else cls.kept()
        known = ("constrained_stop", "valid_sampling", "seed_canvas")
        bad = [n for n in names if n not in known]
        if bad:
            raise ValueError(f"steering: unknown option(s) {bad}; known: off, kept, all, {', '.join(known)}")
        return cls(**dict.fromkeys(names, True))


def dfa_columns(dfa: TokenDFA, logits_nV: torch.Tensor) -> torch.Tensor:
    """The logits of the tokenizer's vocabulary: a model may have more rows than its tokenizer has tokens
    (padded embeddings); those ids are never allowed, and the DP takes exactly the DFA's vocabulary."""
    V = dfa.token_class.shape[0]
    return logits_nV[:, :V] if logits_nV.shape[1] > V else logits_nV


def path_tokens(path, n: int, C: int, pad: int, done: int) -> tuple[torch.Tensor, int]:
    """(tokens [C] long, emitted) of a DP path as the hook commits it: the path's tokens up to and including
    the EOS that enters DONE, then pad (also past the n counted positions). emitted counts the path tokens."""
    out = torch.full((C,), pad, dtype=torch.long)
    emitted = 0
    for i, tok in enumerate(path.tokens[:n]):
        if path.states[i] == done:  # after the EOS: pad
            break
        out[i] = tok
        emitted += 1
    return out, emitted


def steer_tokens(
    tables: DPTables,
    logits_CV: torch.Tensor,
    start: int,
    *,
    tokens_left: int,
    last_canvas: bool,
    pad: int,
) -> torch.Tensor | None:
    """The step's best valid path as canvas tokens [C] (pad after DONE and past the budget), under the
    commit's ending rule (so at the last step it equals what the hook commits); None: nothing to steer."""
    C = logits_CV.shape[0]
    n = max(0, min(C, int(tokens_left)))
    if n == 0 or int(tables.dist[start]) > int(tokens_left):
        return None
    logits = logits_CV[:n].detach().to("cpu", torch.float32)
    path = best_path(tables, logits, start, tokens_after=int(tokens_left) - n, must_finish=last_canvas)
    return path_tokens(path, n, C, pad, tables.done)[0]


class Skeleton:
    """Tokens that start every valid output from a DFA state, for seeding a canvas's first step.

    How: walk the byte automaton (the token DFA restricted to one-byte tokens) while the next byte is forced;
    an optional space before a forced byte is resolved by `space_after`. Cut those bytes into the fewest
    vocabulary tokens (longest first on ties), then keep only the leading tokens that no longer allowed token
    extends: a BPE tokenizer would merge such a token with what follows (`▁"` + `billing",` is one token),
    so only the tokens before it are where the model expects them. Needs a one-byte token for every byte
    value (byte fallback); without one it seeds nothing. Results are cached per state.
    """

    def __init__(self, dfa: TokenDFA, vocab: list[bytes | None] | None, space_after: str = ":,"):
        self.dfa = dfa
        self.space_after = set(space_after.encode())
        self._cache: dict[int, list[int]] = {}
        self._ready = False
        self._vocab = vocab

    def _prepare(self) -> None:
        self._ready = True
        dfa, vocab = self.dfa, self._vocab or []
        self.trans = {(int(s), int(c)): int(d) for s, c, d in zip(dfa.edge_src, dfa.edge_cls, dfa.edge_dst)}
        cls = dfa.token_class
        byte_cls = np.full(256, -1, dtype=np.int64)  # class of each byte's one-byte token (-1: never allowed)
        has_byte = np.zeros(256, dtype=bool)
        entries = []
        for tid, b in enumerate(vocab):
            if not b:
                continue
            if len(b) == 1:
                has_byte[b[0]] = True
                byte_cls[b[0]] = max(byte_cls[b[0]], cls[tid])
            if cls[tid] >= 0:
                entries.append((b, tid))
        self.byte_cls = byte_cls if has_byte.all() else None
        entries.sort()
        self.keys = [b for b, _ in entries]
        self.ids = [t for _, t in entries]
        # Equal bytes, several ids (`{` and its byte-fallback `<0x7B>`): the last id wins; byte-fallback
        # pieces come first in BPE/SentencePiece vocabularies and a tokenizer never emits them for text
        # it has a piece for.
        self.by_bytes = dict(entries)
        self.max_len = max((len(b) for b in self.keys), default=0)

    def _allowed(self, state: int, tid: int) -> int:
        return self.trans.get((state, int(self.dfa.token_class[tid])), -1)

    def forced_bytes(self, state: int, limit: int) -> bytes:
        """The bytes every valid continuation from `state` starts with (optional spaces per space_after)."""
        if not self._ready:
            self._prepare()
        out = bytearray()
        s = state
        while self.byte_cls is not None and len(out) < limit and not bool(self.dfa.final[s]):
            nxt = [
                (b, self.trans[(s, int(c))])
                for b, c in enumerate(self.byte_cls)
                if c >= 0 and (s, int(c)) in self.trans
            ]
            if len(nxt) == 2 and nxt[0][0] == _SPACE:
                space = bool(out) and out[-1] in self.space_after
                b, s = nxt[0] if space else nxt[1]
            elif len(nxt) == 1:
                b, s = nxt[0]
            else:
                break
            out.append(b)
        return bytes(out)

    def seed(self, state: int, limit: int) -> list[int]:
        """At most `limit` token ids to place at the start of a canvas whose carried DFA state is `state`."""
        if not self._ready:
            self._prepare()
        if self.byte_cls is None or limit <= 0:
            return []
        hit = self._cache.get(state)
        if hit is None:
            hit = self._cache[state] = self._compute(state, _MAX_SEED_BYTES)
        return hit[:limit]

    def _compute(self, state: int, limit: int) -> list[int]:
        F = self.forced_bytes(state, limit)
        m = len(F)
        # fewest tokens covering F[j:] exactly (a token must not run past F)
        best = [0] * (m + 1)
        for j in range(m - 1, -1, -1):
            cands = [
                best[j + k] + 1
                for k in range(1, min(self.max_len, m - j) + 1)
                if F[j : j + k] in self.by_bytes
            ]
            best[j] = min(cands) if cands else m + 1
        if m and best[0] > m:
            return []
        toks, j, s = [], 0, state
        while j < m:
            k = next(
                k
                for k in range(min(self.max_len, m - j), 0, -1)
                if F[j : j + k] in self.by_bytes and best[j + k] == best[j] - 1
            )
            tid = self.by_bytes[F[j : j + k]]
            if self._extendable(s, F[j : j + k]):
                break
            toks.append(tid)
            s = self._allowed(s, tid)
            j += k
        return toks

    def _extendable(self, state: int, piece: bytes) -> bool:
        """True when an allowed token from `state` starts with `piece` and is longer."""
        i = bisect.bisect_right(self.keys, piece)
        while i < len(self.keys) and self.keys[i].startswith(piece):
            if len(self.keys[i]) > len(piece) and self._allowed(state, self.ids[i]) >= 0:
                return True
            i += 1
        return False
