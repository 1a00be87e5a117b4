"""The Viterbi commit equals brute force over every token sequence on a toy grammar and vocabulary."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from constraints.dfa import build_token_dfa
from constraints.dp import DPTables, best_path

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


def realised_score(logits, got, done: int) -> float:
    """The score the returned path realises: its token's logit per position, the row's max inside DONE
    (any token; the DP leaves -1 there), checking that -1 appears exactly at the positions inside DONE."""
    total = 0.0
    for i, tok in enumerate(got.tokens):
        inside = got.states[i] == done
        assert (tok == -1) == inside, (i, tok, got.states[i])
        total += float(logits[i].max() if inside else logits[i, tok])
    return total


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
        assert realised_score(logits, got, dfa.n_states) == pytest.approx(want, abs=1e-5)
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


@pytest.mark.parametrize(
    "kind,layout", [("schema", "no_merge"), ("schema", "templates"), ("schema", None), ("choice", None)]
)
def test_fast_sweep_matches_reference_on_a_schema(kind, layout, gemma_tok, monkeypatch):
    """Blocked sweep and both class-max paths (scatter for many live tokens, gather for a choice) vs the
    plain edge Viterbi, from several start states, on a tokenizer-sized vocabulary. Layouts: no_merge keeps
    every bucket width and no templates; templates turns every signature shared by 2+ states into a
    template (several template blocks, with padding slots and dummy states); None is the default."""
    from constraints import dp_layout
    from constraints.choice import choice_regex
    from constraints.schema_regex import schema_to_regex
    from constraints.vocab_bytes import token_bytes

    vocab = token_bytes(gemma_tok)
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "n": {"type": "integer", "maximum": 999}},
        "required": ["name", "n"],
    }
    regex = schema_to_regex(schema) if kind == "schema" else choice_regex(["yes", "no", "maybe"])
    dfa = build_token_dfa(regex, vocab, [1])
    if layout == "no_merge":
        monkeypatch.setattr(dp_layout, "_BUCKET_OVERHEAD_PAIRS", 0)
        monkeypatch.setattr(dp_layout, "_TEMPLATE_MIN_STATES", 10**9)
    if layout == "templates":
        monkeypatch.setattr(dp_layout, "_TEMPLATE_MIN_STATES", 2)
        monkeypatch.setattr(dp_layout, "_TEMPLATE_MIN_PAIRS", 0)
        monkeypatch.setattr(dp_layout, "_TEMPLATE_JOIN_RATIO", 0.0)
    tables = DPTables.from_dfa(dfa)
    few_live = tables.live_tokens.size * 4 < len(vocab)
    assert few_live == (kind == "choice")  # each kind exercises one class_max path
    generic = tables.blocks[tables.n_template_blocks :]
    if layout == "no_merge":
        assert tables.n_template_blocks == 0 and len({b.width for b in generic}) >= 3  # several widths
        assert {b.state_major for b in generic} == {True, False}  # both storage orders
    if layout == "templates":
        tmpl = tables.blocks[: tables.n_template_blocks]
        assert len(tmpl) >= 2 and any(b.templates > 1 for b in tmpl)
        assert tables.n_internal > tables.n_states + 1  # dummy states pad a block's templates
    g = torch.Generator().manual_seed(7)
    for trial, (tokens_after, must_finish) in enumerate([(0, True), (5, False), (100, False)]):
        logits = torch.randn(9, len(vocab), generator=g) * 3
        for start in {0, int(np.argmax(dfa.dist)), dfa.n_states - 1}:
            want = reference_best_score(dfa, logits, start, tokens_after, must_finish)
            if want == float("-inf"):
                continue
            got = best_path(tables, logits, start, tokens_after, must_finish)
            assert got.score == pytest.approx(want, rel=1e-5, abs=1e-4), (trial, start)
            total = realised_score(logits, got, dfa.n_states)
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


def _schema_dfa(gemma_tok):
    from constraints.schema_regex import schema_to_regex
    from constraints.vocab_bytes import token_bytes

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "n": {"type": "integer", "maximum": 999}},
        "required": ["name", "n"],
    }
    return build_token_dfa(schema_to_regex(schema), token_bytes(gemma_tok), [1])


@pytest.mark.parametrize("layout", ["default", "templates"])
def test_layout_holds_exactly_the_dfa_pairs(layout, gemma_tok, monkeypatch):
    """Every real state's padded slots hold exactly its in-pairs (source, class set), EOS and ANY pseudo
    edges included; padding slots and dummy states hold nothing but the sentinel."""
    from constraints import dp_layout

    if layout == "templates":
        monkeypatch.setattr(dp_layout, "_TEMPLATE_MIN_STATES", 2)
        monkeypatch.setattr(dp_layout, "_TEMPLATE_MIN_PAIRS", 0)
        monkeypatch.setattr(dp_layout, "_TEMPLATE_JOIN_RATIO", 0.0)
    dfa = _schema_dfa(gemma_tok)
    t = DPTables.from_dfa(dfa)
    S, K = dfa.n_states, dfa.n_classes
    want: dict[int, dict[int, set]] = {}
    edges = list(zip(dfa.edge_src.tolist(), dfa.edge_dst.tolist(), dfa.edge_cls.tolist()))
    edges += [(int(q), S, K) for q in np.nonzero(dfa.final)[0]] + [(S, S, K + 1)]
    for a, b, c in edges:
        want.setdefault(b, {}).setdefault(a, set()).add(c)
    sentinel = t.n_internal
    for q in range(t.n_internal):
        where = t.state_pairs[q]
        src, sets = t.pad_src[where], t.pad_set[where]
        real = sets < t.n_sets
        assert (src[~real] == sentinel).all() and (src[real] != sentinel).all()
        got = {
            int(t.to_external[a]): set(t.set_classes(int(d)).tolist()) for a, d in zip(src[real], sets[real])
        }
        ext = int(t.to_external[q])
        assert got == (want.get(ext, {}) if ext >= 0 else {}), (q, ext)
    assert sorted(t.to_external[t.to_internal].tolist()) == list(range(S + 1))


def test_set_max_is_the_max_over_each_sets_classes(gemma_tok):
    from constraints.dp import set_max

    t = DPTables.from_dfa(_schema_dfa(gemma_tok))
    assert len({w for _, _, w, _ in t.set_groups}) >= 3  # several padded set sizes
    M = np.random.default_rng(0).standard_normal((7, t.n_classes + 2)).astype(np.float32)
    got = set_max(t, M)
    assert got.shape == (7, t.n_sets + 1) and np.isneginf(got[:, -1]).all()
    for d in range(t.n_sets):
        np.testing.assert_array_equal(got[:, d], M[:, t.set_classes(d)].max(axis=1))
