"""The bounded constraint caches (constraints/cache.py), feasibility checked once per place, special ids from
the model config, and the replica's structured-output adapter holding one cache (pipeline/backend.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from tokenizers import Tokenizer

import constraints
import constraints.cache as cache_mod
import constraints.compile as compile_mod
import constraints.hook as hook_mod
from constraints import (
    CacheConfig,
    ConstraintCache,
    InfeasibleConstraint,
    build_hook,
    check_feasible,
    decode_text,
    validate_output,
)
from constraints.cache import LRU
from model import DiffusionGemmaConfig
from pipeline.rows import PreparedRow
from tests.constraints.conftest import rollout


def _schema(i: int) -> dict:
    """A distinct small schema per i (a different fixed length each)."""
    return {"type": "string", "minLength": i + 1, "maxLength": i + 1, "pattern": "^[a-z]*$"}


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """The regexes actually compiled to automata, in process or in the worker (neither memory nor disk had
    them)."""
    seen: list[str] = []
    in_process, in_worker = compile_mod.build_token_dfa, compile_mod._build_in_worker

    def build(regex, *args, **kw):
        seen.append(regex)
        return in_process(regex, *args, **kw)

    def worker(regex, *args, **kw):
        seen.append(regex)
        return in_worker(regex, *args, **kw)

    monkeypatch.setattr(compile_mod, "build_token_dfa", build)
    monkeypatch.setattr(compile_mod, "_build_in_worker", worker)
    return seen


def test_lru_bound_and_recency():
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "a" is now the most recent: "b" goes first
    lru.put("c", 3)
    assert len(lru) == 2 and "b" not in lru and lru.get("a") == 1 and lru.get("c") == 3
    with pytest.raises(ValueError, match="maxsize"):
        LRU(0)
    with pytest.raises(ValueError, match="CacheConfig.automata"):
        CacheConfig(automata=0)


def test_automata_bounded_and_compiled_once(gemma_tok, cfg, builds):
    n = 3
    cache = ConstraintCache(CacheConfig(automata=n))
    hooks = [
        build_hook({"json_schema": _schema(i)}, gemma_tok, [1], max_new_tokens=64, pad_token_id=0, config=cfg,
                   cache=cache)
        for i in range(n + 1)
    ]
    assert len(cache.automata) == n and len(builds) == n + 1 and cache.loads == n + 1
    # the same schema again (the most recent one, still held): no compile, no disk read, the same automaton
    again = build_hook({"json_schema": _schema(n)}, gemma_tok, [1], max_new_tokens=64, pad_token_id=0,
                       config=cfg, cache=cache)
    assert again.dfa is hooks[n].dfa and len(builds) == n + 1 and cache.loads == n + 1
    # the evicted first schema comes back from the disk cache, not from a rebuild
    first = build_hook({"json_schema": _schema(0)}, gemma_tok, [1], max_new_tokens=64, pad_token_id=0,
                       config=cfg, cache=cache)
    assert len(builds) == n + 1 and cache.loads == n + 2 and len(cache.automata) == n
    assert (first.dfa.edge_dst == hooks[0].dfa.edge_dst).all()
    tokens, _ = rollout(first, gemma_tok.get_vocab_size(), max_new_tokens=64, canvas=8, seed=0)
    text = decode_text(first, tokens[: tokens.index(1)])
    assert validate_output({"json_schema": _schema(0)}, text)[0] and len(json.loads(text)) == 1


def test_vocabulary_by_content_and_bounded(gemma_tok, bytelevel_tok, monkeypatch):
    calls: list[int] = []
    real = cache_mod.token_bytes
    monkeypatch.setattr(cache_mod, "token_bytes", lambda tok: calls.append(1) or real(tok))
    cache = ConstraintCache(CacheConfig(vocabularies=1))
    v1 = cache.vocabulary(gemma_tok)
    twin = Tokenizer.from_str(gemma_tok.to_str())  # another object, the same content
    assert cache.vocabulary(twin) is v1 and cache.vocabulary(gemma_tok) is v1 and len(calls) == 1
    v2 = cache.vocabulary(bytelevel_tok)
    assert v2.hash != v1.hash and len(cache.vocabularies) == 1 and len(calls) == 2
    assert cache.vocabulary(gemma_tok).tokens == v1.tokens and len(calls) == 3  # evicted: computed again


def test_feasibility_checked_once_per_place(gemma_tok, cfg, monkeypatch):
    checks: list[int | None] = []
    real = hook_mod.require_budget

    def counting(dfa, max_new_tokens, description):
        checks.append(max_new_tokens)
        return real(dfa, max_new_tokens, description)

    monkeypatch.setattr(hook_mod, "require_budget", counting)  # what ConstraintHook calls
    monkeypatch.setattr(constraints, "require_budget", counting)  # what check_feasible calls
    cache = ConstraintCache()
    section = {"json_schema": _schema(4)}
    need = check_feasible(section, gemma_tok, [1], max_new_tokens=100, config=cfg, cache=cache)
    assert checks == [100] and cache.loads == 1
    hook = build_hook(section, gemma_tok, [1], max_new_tokens=100, pad_token_id=0, config=cfg, cache=cache)
    assert checks == [100, 100] and cache.loads == 1 and hook.min_tokens == need  # reused, not recompiled
    short = need - 1
    msg = f"needs at least {need} new tokens, but max_new_tokens={short}"
    with pytest.raises(InfeasibleConstraint, match=msg):
        build_hook(section, gemma_tok, [1], max_new_tokens=short, pad_token_id=0, config=cfg, cache=cache)
    assert checks == [100, 100, short] and cache.loads == 1


def test_pad_comes_from_the_config_or_is_required(gemma_tok, cfg):
    with pytest.raises(ValueError, match="pad token id"):
        build_hook({"regex": "[a-z]{2}"}, gemma_tok, [1], max_new_tokens=8, config=cfg)
    model_cfg = dataclasses.replace(DiffusionGemmaConfig.full_size(), eos_token_ids=(1,))
    assert model_cfg.generation.pad_token_id == 0
    hook = build_hook({"regex": "[a-z]{2}"}, gemma_tok, model_cfg, max_new_tokens=8, config=cfg)
    assert hook.pad_token_id == 0 and hook.canvas_length == 256
    assert build_hook({"regex": "[a-z]{2}"}, gemma_tok, model_cfg, max_new_tokens=8, config=cfg,
                      pad_token_id=2).pad_token_id == 2  # an explicit id wins


def test_backend_replica_holds_one_bounded_cache(gemma_tok, tmp_path, monkeypatch, builds):
    """Per-row schemas through the replica's adapter: repeated schemas compile once, distinct ones are held
    up to the cache's bound, a bad one is that row's error."""
    from pipeline.backend import _ConstraintHooks
    from pipeline.spec import JobSpec

    monkeypatch.setenv("DGBATCH_CONSTRAINT_CACHE", str(tmp_path / "disk"))  # compiles in the worker process
    spec = JobSpec.parse({"input": {"path": "in", "prompt_column": "p"}, "output": {"path": "out"},
                          "structured_output": {"schema_column": "s"}})
    model_cfg = dataclasses.replace(DiffusionGemmaConfig.tiny(), eos_token_ids=(1,))
    hooks = _ConstraintHooks(spec, gemma_tok, model_cfg, max_new_tokens=32)
    assert hooks.shared is None and hooks.cache.config == CacheConfig()  # created with the replica
    hooks.cache = ConstraintCache(CacheConfig(automata=2))  # a small bound, to reach it with 4 schemas

    def row(i: int, schema) -> PreparedRow:
        return PreparedRow(index=i, id=f"r{i}", seed=i, prompt="x", extra={"s": json.dumps(schema)})

    a, b = hooks.for_row(row(0, _schema(0))), hooks.for_row(row(1, _schema(0)))
    assert a.dfa is b.dfa and len(builds) == 1 and a.pad_token_id == 0  # text_config's pad id
    for i in range(1, 4):
        hooks.for_row(row(i + 1, _schema(i)))
    assert len(builds) == 4 and len(hooks.cache.automata) == 2
    bad = hooks.for_row(row(9, {"type": "integer", "multipleOf": 2}))
    assert isinstance(bad, str) and "unsupported: multipleOf" in bad
