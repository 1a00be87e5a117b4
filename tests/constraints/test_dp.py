"""The Viterbi commit equals brute force over every token sequence on a toy grammar and vocabulary."""

from __future__ import annotations

import itertools

import pytest
import torch

from pipeline.constraints.dfa import build_token_dfa
from pipeline.constraints.dp import DPTables, best_path

# ids: 0 <pad>, 1 <eos>, then pieces
VOCAB = [None, None, b"a", b"b", b"c", b"ab", b"bc", b"ca"]
REGEX = "(ab|a)(b|c){0,2}ca?"


def brute_force(dfa, logits, start, tokens_after, must_finish):
    """Best score over all sequences, with the DP's semantics (EOS -> DONE, DONE loops on anything)."""
    S, n, V = dfa.n_states, logits.shape[0], logits.shape[1]
    done = S
    table = [[dfa.step(q, t) for t in range(V)] for q in range(S)]
    eos = set(dfa.eos_ids.tolist())
    lg = logits.tolist()
    best = float("-inf")
    for seq in itertools.product(range(V), repeat=n):
        q, score = start, 0.0
        for i, t in enumerate(seq):
            if q == done:
                nq = done
            elif t in eos:
                nq = done if dfa.final[q] else -1
            else:
                nq = table[q][t]
            if nq < 0:
                break
            q, score = nq, score + lg[i][t]
        else:
            dist = 0 if q == done else int(dfa.dist[q])
            if dist <= (0 if must_finish else tokens_after):
                best = max(best, score)
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tokens_after,must_finish", [(0, True), (1, False), (10, False)])
def test_dp_equals_brute_force(seed, tokens_after, must_finish):
    dfa = build_token_dfa(REGEX, VOCAB, [1])
    tables = DPTables.from_dfa(dfa)
    g = torch.Generator().manual_seed(seed)
    n = 5
    logits = torch.randn(n, len(VOCAB), generator=g)
    for start in sorted({0, dfa.step(0, 5), dfa.step(0, 2)}):
        want = brute_force(dfa, logits, start, tokens_after, must_finish)
        if want == float("-inf"):
            continue
        got = best_path(tables, logits, start, tokens_after, must_finish)
        assert got.score == pytest.approx(want, abs=1e-5)
        # the returned tokens realise that score along a valid path
        total = sum(float(logits[i, t]) for i, t in enumerate(got.tokens))
        assert total == pytest.approx(want, abs=1e-5)
        assert got.states[0] == start and len(got.tokens) == n
