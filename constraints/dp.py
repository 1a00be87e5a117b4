"""The commit decision: the best valid token path through a canvas under the last step's logits (Viterbi).

Legend: n counted canvas positions, V vocabulary, K token classes (+2 pseudo classes: EOS = K, ANY = K+1),
S DFA states (+1: DONE = S), D distinct class sets of state pairs (layout and its costs: dp_layout.py).

Per canvas: M[i, c] = max logit over the tokens of class c (one scatter-amax over the vocabulary), then the
best class of each distinct class set, then a max-plus sweep over the laid-out pairs per position from the
carried start state, then a backtrack. Final states reach DONE on an EOS id; DONE loops on any token
("don't care": the hook writes pad there). Ending rule, so a completion always remains possible: the end
state must have dist <= the tokens left after this canvas (dist 0 = final or DONE on the last canvas). Raw
logits suffice: every path has one token per position, so per-position normalisation shifts all path
scores equally.

Two implementations of the same numbers: this file's numpy path is the reference; dp_numba.py computes
them in compiled loops (2.5-3x faster, bench/RESULTS.md). `BACKEND` is resolved once at import: "numba"
(a required dependency, pyproject.toml) unless DGBATCH_DP=numpy; best_path(..., backend=) overrides it per
call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from constraints.dp_layout import DPTables

__all__ = ["DPTables", "PathResult", "best_path", "class_max", "pin_conflict", "pinned_M"]

NEG = float("-inf")


def _resolve_backend() -> str:
    want = os.environ.get("DGBATCH_DP", "numba")
    if want not in ("numba", "numpy"):
        raise ValueError(f"DGBATCH_DP={want!r}: expected 'numba' or 'numpy'")
    return want


BACKEND = _resolve_backend()


@dataclass
class PathResult:
    # n token ids; -1 at positions taken inside DONE (any token scores the row's max logit there, and the
    # hook writes pad: finding that argmax would be one more pass over the vocabulary for nothing)
    tokens: list[int]
    states: list[int]  # n + 1 external states along the path (states[0] = start)
    score: float  # sum of the chosen logits


def class_max(t: DPTables, logits_nV: torch.Tensor) -> np.ndarray:
    """M [n, K + 2] float32: per position, the best logit of each class, then of the EOS ids, then of all.

    The O(n*V) pass that dominates small constraints at large V, done one of two ways (measured, 1 thread):
    - few live tokens (a choice: 46 of 262k): gather their columns, max per class, plus one streaming
      numpy max over the vocabulary for ANY (27 ms vs 113 ms for the scatter at V=262k, n=256);
    - otherwise one torch scatter-amax into a bucket per class; every token lands in a bucket
      (never-allowed ones in a discarded one), so ANY is the max over the buckets, no second pass.
    torch's max(dim=...) is avoided: ~4x slower than numpy's max or torch.amax here.
    """
    n, K = logits_nV.shape[0], t.n_classes
    logits_np = logits_nV.numpy()
    if t.live_tokens.size * 4 < logits_nV.shape[1]:
        M = np.empty((n, K + 2), dtype=np.float32)
        if K:
            live = np.take(logits_np, t.live_tokens, axis=1, mode="clip")
            M[:, :K] = np.maximum.reduceat(live, t.class_starts, axis=1)
        M[:, K + 1] = logits_np.max(axis=1)
    else:
        Mb = torch.full((n, K + 3), NEG)
        bucket = torch.from_numpy(t.token_bucket)
        Mb.scatter_reduce_(1, bucket.expand(n, -1), logits_nV, reduce="amax", include_self=True)
        M = Mb.numpy()
        M[:, K + 1] = M.max(axis=1)
        M = M[:, : K + 2]
    M[:, K] = np.take(logits_np, t.eos_ids, axis=1).max(axis=1) if t.eos_ids.size else NEG
    return M


def set_max(t: DPTables, M: np.ndarray) -> np.ndarray:
    """Mset [n, D + 1] float32: per position, the best class score of each distinct class set; the last
    column is -inf (padding slots point there)."""
    n, K2 = M.shape
    Mset = np.empty((n, t.n_sets + 1), dtype=np.float32)
    Mset[:, -1] = NEG
    if t.n_sets:
        Mp = np.empty((n, K2 + 1), dtype=np.float32)  # + a -inf column for the padding of short sets
        Mp[:, :K2] = M
        Mp[:, K2] = NEG
        # one column gather, then a max over each size group's slots: ~10x faster than a reduceat over
        # hundreds of tiny segments per row (~50 ns a segment)
        G = np.take(Mp, t.set_cols, axis=1, mode="clip")
        for first, count, w, off in t.set_groups:
            G[:, off : off + w * count].reshape(n, w, count).max(axis=1, out=Mset[:, first : first + count])
    return Mset


def pinned_M(t: DPTables, pins_n, pad: int) -> np.ndarray:
    """M [n, K + 2] for positions whose logits do not exist yet (later canvases of a row with pins): every
    choice scores 0 at a free position (pins_n < 0); a pinned position allows only its pin: its class, EOS
    when it is an EOS id, ANY (DONE's don't-care, where the hook writes pad) when it is pad."""
    pins_n = np.asarray(pins_n, dtype=np.int64)
    K = t.n_classes
    M = np.zeros((pins_n.size, K + 2), dtype=np.float32)
    for i in np.nonzero(pins_n >= 0)[0]:
        tok = int(pins_n[i])
        M[i] = NEG
        c = int(t.token_bucket[tok]) if tok < t.token_bucket.size else K + 2
        if c < K:
            M[i, c] = 0.0
        if tok in t.eos_ids:
            M[i, K] = 0.0
        if tok == pad:
            M[i, K + 1] = 0.0
    return M


def pin_conflict(t: DPTables, M: np.ndarray, start: int, tokens_after: int, must_finish: bool) -> int | None:
    """None when some valid path scores above -inf under M [n, K + 2] (pinned_M); else the first position
    after which no state is reachable, or n when the end rule alone fails (no valid ending in budget)."""
    n = M.shape[0]
    history = _sweep(t, set_max(t, M), int(t.to_internal[start]), n)
    dead = np.nonzero(~np.isfinite(history[1:, :-1]).any(axis=1))[0]
    if dead.size:
        return int(dead[0])
    allowed = t.end_dist <= (0 if must_finish else tokens_after)
    return None if np.isfinite(history[n, :-1][allowed]).any() else n


def best_path(
    t: DPTables, logits_nV, start: int, tokens_after: int, must_finish: bool, *, backend: str | None = None,
    tail_M: np.ndarray | None = None, pin_n: np.ndarray | None = None, pad: int = -1,
) -> PathResult:
    """Viterbi over n = logits_nV.shape[0] positions from external state `start`.

    tokens_after: tokens the row may still emit after this canvas; the end state must have dist <= it.
    must_finish: the end state must be final or DONE (the row's last allowed canvas).
    backend: "numba" or "numpy" (None: BACKEND); both return the same path.
    tail_M: class scores [m, K + 2] of positions after this canvas (pinned_M: the row's later pins); the path
    then runs over n + m positions (tokens_after counts after them) and returns its first n (numpy path).
    pin_n: this canvas' pins (-1 free; the logits already allow only the pin there): a pinned position is not
    DONE's don't-care (where the hook writes pad) unless its pin is `pad`.
    """
    logits_t = torch.as_tensor(logits_nV).detach().to("cpu", torch.float32).contiguous()
    if tail_M is None and pin_n is None and (backend or BACKEND) == "numba":
        from constraints import dp_numba

        tokens, states, score = dp_numba.viterbi(
            t, logits_t.numpy(), start, 0 if must_finish else tokens_after
        )
        return PathResult(tokens, states, score)
    n_real = logits_t.shape[0]
    M = class_max(t, logits_t)  # [n, K + 2]
    if pin_n is not None:
        pin_n = np.asarray(pin_n, dtype=np.int64)[:n_real]
        M[(pin_n >= 0) & (pin_n != pad), t.n_classes + 1] = NEG
    if tail_M is not None:
        M = np.concatenate([M, tail_M.astype(np.float32)])
    n = M.shape[0]
    Mset = set_max(t, M)  # [n, D + 1]
    history = _sweep(t, Mset, int(t.to_internal[start]), n)  # [n + 1, n_internal + 1]
    allowed = t.end_dist <= (0 if must_finish else tokens_after)  # by internal id
    masked = np.where(allowed, history[n, :-1], NEG)
    end = int(masked.argmax())
    if masked[end] == NEG:
        raise RuntimeError(f"no valid path from state {start} in {n} tokens (budget {tokens_after}); a bug")
    logits_np = logits_t.numpy()
    pad_src, pad_set = t.pad_src, t.pad_set
    states, tokens, q = [end], [], end
    for i in range(n - 1, -1, -1):
        where = t.state_pairs[q]
        cand_src, cand_set = pad_src[where], pad_set[where]
        if cand_src.size == 0:
            raise RuntimeError(f"state {q} has no in-pairs on a best path; a bug")
        vals = history[i].take(cand_src) + Mset[i].take(cand_set)
        j = int(vals.argmax())
        members = t.set_classes(int(cand_set[j]))
        c = int(members[int(M[i].take(members).argmax())]) if members.size > 1 else int(members[0])
        tokens.append(-1 if c == t.n_classes + 1 or i >= n_real else _best_token(t, logits_np[i], c))
        q = int(cand_src[j])
        states.append(q)
    tokens.reverse()
    states.reverse()
    return PathResult(tokens[:n_real], t.to_external[states[: n_real + 1]].tolist(), float(masked[end]))


def _sweep(t: DPTables, Mset: np.ndarray, start: int, n: int) -> np.ndarray:
    """Scores [n + 1, n_internal + 1] by internal state: row i holds each state's best score after i tokens.

    Per position: one gather of the previous row at every padded pair's source and one of the set scores
    per block row; one flat add for all generic blocks (a row is a pair there), one broadcast add per
    template block; one max over the slots per block. np.take with mode="clip" skips numpy's per-index
    bounds check (indices are valid by construction): ~2.5x faster than the default, ~20% than
    torch.index_select. Views are made once, outside the loop (a call costs ~1-3 us). Walking the blocks
    in L2-sized chunks (gather, add, max per chunk) measured no better on this box.
    """
    history = np.full((n + 1, t.n_internal + 1), NEG, dtype=np.float32)
    history[0, start] = 0.0
    vals = np.empty(t.pad_src.size, dtype=np.float32)
    rowm = np.empty(t.row_set.size, dtype=np.float32)
    cur = np.full(t.n_internal + 1, NEG, dtype=np.float32)  # the row being built; sentinel stays -inf
    adds, reduce = [], []  # (values, set scores) to add in place; (block, reduced axis, output)
    for j, b in enumerate(t.blocks):
        v = vals[b.off : b.off + b.width * b.n_states]
        if j < t.n_template_blocks:  # one set score per [slot, template] row, broadcast over n states
            r = rowm[b.row_off : b.row_off + b.width * b.templates]
            adds.append((v.reshape(b.width * b.templates, b.cols), r[:, None]))
        elif j == t.n_template_blocks:  # generic blocks: rows and pairs coincide one to one, to the end
            adds.append((vals[b.off :], rowm[b.row_off :]))
        shape = (b.n_states, b.width) if b.state_major else (b.width, b.n_states)
        reduce.append((v.reshape(shape), int(b.state_major), cur[b.first : b.first + b.n_states]))
    maximum = np.maximum.reduce  # called directly: ndarray.max adds ~0.5 us of Python per call
    for i in range(n):
        history[i].take(t.pad_src, out=vals, mode="clip")
        Mset[i].take(t.row_set, out=rowm, mode="clip")
        for v, r in adds:
            np.add(v, r, out=v)
        for block, axis, out in reduce:
            maximum(block, axis, None, out)
        history[i + 1] = cur
    return history


def _best_token(t: DPTables, logits_V: np.ndarray, c: int) -> int:
    if c == t.n_classes:  # EOS
        return int(t.eos_ids[int(logits_V[t.eos_ids].argmax())])
    hi = t.class_starts[c + 1] if c + 1 < t.class_starts.size else t.live_tokens.size
    mem = t.live_tokens[t.class_starts[c] : hi]
    return int(mem[int(logits_V[mem].argmax())])
