"""The Viterbi commit equals brute force over every token sequence on a toy grammar and vocabulary."""

from __future__ import annotations

import itertools

import numpy as np
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


def reference_best_score(dfa, logits, start, tokens_after, must_finish):
    """A plain Viterbi over class edges (np.maximum.at per position): the spec the fast sweep must meet."""
    S, K = dfa.n_states, dfa.n_classes
    lg = logits.numpy().astype(np.float64)
    tc = dfa.token_class
    M = np.full((lg.shape[0], K), -np.inf)
    for c in range(K):
        M[:, c] = lg[:, tc == c].max(axis=1)
    eos = lg[:, dfa.eos_ids].max(axis=1)
    score = np.full(S + 1, -np.inf)
    score[start] = 0.0
    for i in range(lg.shape[0]):
        new = np.full(S + 1, -np.inf)
        np.maximum.at(new, dfa.edge_dst, score[dfa.edge_src] + M[i, dfa.edge_cls])
        new[S] = max(score[S] + lg[i].max(), (score[:S][dfa.final] + eos[i]).max(initial=-np.inf))
        score = new
    dist = np.append(dfa.dist, 0)
    return float(np.where(dist <= (0 if must_finish else tokens_after), score, -np.inf).max())


@pytest.mark.parametrize("kind,merge", [("schema", 0), ("schema", None), ("choice", None)])
def test_fast_sweep_matches_reference_on_a_schema(kind, merge, gemma_tok, monkeypatch):
    """Bucketed sweep and both class-max paths (scatter for many live tokens, gather for a choice) vs the
    plain edge Viterbi, from several start states, on a tokenizer-sized vocabulary; merge=0 keeps every
    bucket width (no merging of small buckets)."""
    from pipeline.constraints import dp
    from pipeline.constraints.choice import choice_regex
    from pipeline.constraints.schema_regex import schema_to_regex
    from pipeline.constraints.vocab_bytes import token_bytes

    vocab = token_bytes(gemma_tok)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "n": {"type": "integer", "maximum": 999}},
        "required": ["name", "n"],
    }
    regex = schema_to_regex(schema) if kind == "schema" else choice_regex(["yes", "no", "maybe"])
    dfa = build_token_dfa(regex, vocab, [1])
    if merge is not None:
        monkeypatch.setattr(dp, "_BUCKET_OVERHEAD_PAIRS", merge)
    tables = DPTables.from_dfa(dfa)
    few_live = tables.live_tokens.size * 4 < len(vocab)
    assert few_live == (kind == "choice")  # each kind exercises one class_max path
    if merge == 0:
        assert len({w for _, _, w, _ in tables.buckets}) >= 3  # several bucket widths
    g = torch.Generator().manual_seed(7)
    for trial, (tokens_after, must_finish) in enumerate([(0, True), (5, False), (100, False)]):
        logits = torch.randn(9, len(vocab), generator=g) * 3
        for start in {0, int(np.argmax(dfa.dist)), dfa.n_states - 1}:
            want = reference_best_score(dfa, logits, start, tokens_after, must_finish)
            if want == float("-inf"):
                continue
            got = best_path(tables, logits, start, tokens_after, must_finish)
            assert got.score == pytest.approx(want, rel=1e-5, abs=1e-4), (trial, start)
            total = sum(float(logits[i, t]) for i, t in enumerate(got.tokens))
            assert total == pytest.approx(want, rel=1e-5, abs=1e-4)
            q = start  # the path is valid token by token
            for tok, nxt in zip(got.tokens, got.states[1:]):
                if q == dfa.n_states:
                    assert nxt == q
                elif tok in (1,) and dfa.final[q]:
                    assert nxt == dfa.n_states
                else:
                    assert dfa.step(q, tok) == nxt
                q = nxt
