"""The compiled DP (dp_numba.py) returns exactly the numpy reference's path: tokens, states and score, ties
included; both equal brute force on the toy grammar; the backend switch and the no-cache fallback work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constraints import dp, dp_numba
from constraints.dfa import build_token_dfa
from constraints.dp import DPTables, best_path
from tests.constraints.test_dp import REGEX, VOCAB, brute_force, realised_score

LAYOUTS = {  # dp_layout knobs: default; every signature a template; no templates, no bucket merging
    "default": {},
    "templates": {"_TEMPLATE_MIN_STATES": 2, "_TEMPLATE_MIN_PAIRS": 0, "_TEMPLATE_JOIN_RATIO": 0.0},
    "no_merge": {"_BUCKET_OVERHEAD_PAIRS": 0, "_TEMPLATE_MIN_STATES": 10**9},
}


def assert_same(a: dp.PathResult, b: dp.PathResult, ctx) -> None:
    assert a.tokens == b.tokens, ctx
    assert a.states == b.states, ctx
    assert a.score == b.score, ctx  # bit-identical: the same float32 sums


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("seed", range(3))
def test_both_backends_equal_brute_force(backend, seed):
    dfa = build_token_dfa(REGEX, VOCAB, [1])
    tables = DPTables.from_dfa(dfa)
    logits = torch.randn(5, len(VOCAB), generator=torch.Generator().manual_seed(100 + seed))
    for tokens_after, must_finish in [(0, True), (1, False), (10, False)]:
        for start in sorted({0, dfa.step(0, 5), dfa.step(0, 2)}):
            want = brute_force(dfa, logits, start, tokens_after, must_finish)
            if want == float("-inf"):
                continue
            got = best_path(tables, logits, start, tokens_after, must_finish, backend=backend)
            assert got.score == pytest.approx(want, abs=1e-5)
            assert realised_score(logits, got, dfa.n_states) == pytest.approx(want, abs=1e-5)


@pytest.fixture(scope="module")
def dfas(gemma_tok):
    from constraints.choice import choice_regex
    from constraints.schema_regex import schema_to_regex
    from constraints.vocab_bytes import token_bytes

    vocab = token_bytes(gemma_tok)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "n": {"type": "integer", "maximum": 999},
            "tag": {"enum": ["a", "bc"]},
        },
        "required": ["name", "n"],
    }
    return {
        "schema": build_token_dfa(schema_to_regex(schema), vocab, [1]),
        "choice": build_token_dfa(choice_regex(["yes", "no", "maybe"]), vocab, [1, 2]),
    }


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", ["schema", "choice"])
def test_numba_equals_numpy_on_random_logits(kind, layout, dfas, monkeypatch):
    """Seeded logits of three kinds: continuous (no ties), small integers (ties everywhere: the first-max
    rules must agree) and with -inf entries (whole classes masked); odd lengths 1..17; several starts and
    budgets."""
    from constraints import dp_layout

    for name, value in LAYOUTS[layout].items():
        monkeypatch.setattr(dp_layout, name, value)
    dfa = dfas[kind]
    tables = DPTables.from_dfa(dfa)
    V = dfa.token_class.size
    rng = np.random.default_rng(sum(map(ord, kind + layout)))
    starts = sorted({0, int(np.argmax(dfa.dist)), dfa.n_states - 1, dfa.n_states})  # DONE included
    compared = 0
    for trial in range(12):
        n = int(rng.choice([1, 2, 7, 17]))
        if trial % 3 == 0:
            x = rng.standard_normal((n, V)).astype(np.float32) * 3
        elif trial % 3 == 1:
            x = rng.integers(-2, 3, (n, V)).astype(np.float32)
        else:
            x = rng.standard_normal((n, V)).astype(np.float32)
            x[rng.random((n, V)) < 0.5] = -np.inf
            x[:, 1] = 0.0  # keep a finite EOS so a path exists
        logits = torch.from_numpy(x)
        tokens_after, must_finish = [(0, True), (3, False), (1000, False)][trial % 3]
        for start in starts:
            try:
                want = best_path(tables, logits, start, tokens_after, must_finish, backend="numpy")
            except RuntimeError:  # no valid path (too few positions for this budget): numba must agree
                with pytest.raises(RuntimeError, match="no valid path"):
                    best_path(tables, logits, start, tokens_after, must_finish, backend="numba")
                continue
            got = best_path(tables, logits, start, tokens_after, must_finish, backend="numba")
            assert_same(got, want, (trial, n, start))
            compared += 1
    assert compared >= 20


def test_class_max_matches_reference_and_argmax(dfas):
    """M equals dp.class_max (both of its paths); A is the first (lowest id) best token of each class."""
    for dfa in dfas.values():
        t = DPTables.from_dfa(dfa)
        x = np.random.default_rng(3).integers(-3, 4, (9, dfa.token_class.size)).astype(np.float32)
        M, A, eos_tok = dp_numba.class_max(t, x)
        np.testing.assert_array_equal(M, dp.class_max(t, torch.from_numpy(x)))
        for c in range(t.n_classes):
            members = np.nonzero(dfa.token_class == c)[0]
            np.testing.assert_array_equal(A[:, c], members[x[:, members].argmax(axis=1)])
        np.testing.assert_array_equal(eos_tok, t.eos_ids[x[:, t.eos_ids].argmax(axis=1)])


def test_bad_logits_shape_is_a_clear_error(dfas):
    t = DPTables.from_dfa(dfas["choice"])
    with pytest.raises(ValueError, match="expected \\[n, "):
        best_path(t, torch.zeros(3, 7), 0, 10, False, backend="numba")


def test_backend_switch(monkeypatch):
    monkeypatch.setenv("DGBATCH_DP", "numpy")
    assert dp._resolve_backend() == "numpy"
    monkeypatch.delenv("DGBATCH_DP")
    assert dp._resolve_backend() == "numba"  # numba is installed here
    monkeypatch.setenv("DGBATCH_DP", "fortran")
    with pytest.raises(ValueError, match="DGBATCH_DP"):
        dp._resolve_backend()


def test_uncached_fallback_when_no_cache_location(monkeypatch):
    """No writable cache location (numba raises at decoration): the kernel still compiles, uncached."""
    import numba.core.config

    # only the IPython locator: it declines ordinary files, as all locators do on a read-only install
    monkeypatch.setattr(numba.core.config, "CACHE_LOCATOR_CLASSES", "IPythonCacheLocator")

    def add_one(x):
        return x + 1

    f = dp_numba._jit(add_one)
    assert f(1) == 2
    assert type(f._cache).__name__ == "NullCache"
