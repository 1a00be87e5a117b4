"""`choice` constraints: the alternation regex and a score per label.

A label's score is the log-probability (sum of per-position log-softmax) of its best tokenisation placed at
the start of the first canvas, followed by an EOS and the best token at every later position. With that
definition the label the DP commits to is the highest-scoring one (the DP maximises the same sum, since
per-position normalisation shifts every path equally), so scores and choice agree.
"""

from __future__ import annotations

import math

import torch

from constraints.regex_atoms import escape


def choice_regex(labels: list[str]) -> str:
    """Alternation of the labels, longest first (the regex engine's alternation is leftmost-first)."""
    if not labels or not all(isinstance(x, str) and x for x in labels):
        raise ValueError("choice: expected a non-empty list of non-empty strings")
    if len(set(labels)) != len(labels):
        raise ValueError("choice: labels must be distinct")
    ordered = sorted(labels, key=lambda x: (-len(x.encode()), x))
    return "(?:" + "|".join(escape(x) for x in ordered) + ")"


class LabelScorer:
    """Scores every label against one canvas of logits; built once per hook."""

    def __init__(self, labels: list[str], vocab: list[bytes | None], eos_ids):
        self.labels = list(labels)
        self.eos_ids = torch.as_tensor(list(eos_ids), dtype=torch.long)
        index: dict[bytes, list[int]] = {}
        for tid, b in enumerate(vocab):
            if b:
                index.setdefault(b, []).append(tid)
        # per label, per byte offset j: (token ids, byte lengths) of the tokens spelling label[j:j+len]
        self.cands: list[list[tuple[list[int], list[int]]]] = []
        for label in self.labels:
            b = label.encode("utf-8")
            per_j = []
            for j in range(len(b)):
                ids, lens = [], []
                for k in range(j + 1, len(b) + 1):
                    for tid in index.get(b[j:k], []):
                        ids.append(tid)
                        lens.append(k - j)
                per_j.append((ids, lens))
            self.cands.append(per_j)

    def scores(self, logits_nV: torch.Tensor) -> dict[str, float]:
        """label -> log-probability of its best placement (-inf if it cannot fit in these positions)."""
        logp = torch.log_softmax(logits_nV.float(), dim=-1)  # [n, V]
        n = logp.shape[0]
        best = logp.max(dim=-1).values
        tail = torch.cat([best.flip(0).cumsum(0).flip(0), torch.zeros(1)])  # tail[i] = sum over >= i
        eos = (
            logp[:, self.eos_ids].max(dim=-1).values if self.eos_ids.numel() else torch.full((n,), -math.inf)
        )
        out: dict[str, float] = {}
        for label, per_j in zip(self.labels, self.cands):
            m = len(per_j)
            lp = [logp[:, ids].tolist() if ids else None for ids, _ in per_j]  # [m][n][cands]
            F = {0: 0.0}  # spelled bytes -> best score after i tokens
            best_label = -math.inf
            for i in range(n + 1):
                if m in F:
                    done = F[m] + (float(eos[i]) + float(tail[i + 1]) if i < n else 0.0)
                    best_label = max(best_label, done)
                if i == n or not F:
                    break
                G: dict[int, float] = {}
                for j, s in F.items():
                    if j == m:
                        continue
                    ids, lens = per_j[j]
                    for c, length in enumerate(lens):
                        v = s + lp[j][i][c]
                        if v > G.get(j + length, -math.inf):
                            G[j + length] = v
                F = G
            out[label] = best_label
        return out
