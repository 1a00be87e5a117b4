"""Public entry points: every constraint kind, refusals, choice scores, the compile worker and cache,
validate_output / check_output, the pipeline's call shape, and `dgbatch check-schema`."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest

from constraints import (
    CompileConfig,
    CompileError,
    InfeasibleConstraint,
    UnsupportedSchema,
    build_hook,
    check_feasible,
    check_output,
    compile_regex,
    decode_text,
    validate_output,
)
from constraints.vocab_bytes import token_bytes
from model import DiffusionGemmaConfig
from tests.constraints.conftest import rollout

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 5},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
    },
    "required": ["name", "age"],
}


def _run(section, tok, cfg, *, budget=48, canvas=8, seed=0, row=None):
    hook = build_hook(section, tok, [1], max_new_tokens=budget, canvas_length=canvas, config=cfg, row=row,
                      pad_token_id=0)
    tokens, state = rollout(hook, tok.get_vocab_size(), max_new_tokens=budget, canvas=canvas, seed=seed)
    ids = tokens[: tokens.index(1)] if 1 in tokens else tokens
    return decode_text(hook, ids), state


@pytest.mark.parametrize(
    "section",
    [
        {"json_schema": PERSON},
        {"pydantic": "tests.constraints.pyd_models:Person"},
        {"regex": r"[A-Z][a-z]{1,4}-[0-9]{2}(\.[0-9])?"},
        {"choice": ["positive", "negative", "neutral"]},
    ],
)
def test_every_kind_validates(section, gemma_tok, cfg):
    for seed in range(3):
        text, state = _run(section, gemma_tok, cfg, seed=seed)
        ok, parsed, err = validate_output(section, text)
        assert ok, (text, err)
        if "choice" in section:
            assert text in section["choice"] and set(state.label_scores) == set(section["choice"])
            assert state.chosen == text  # the committed label is the best-scoring one
        if "json_schema" in section or "pydantic" in section:
            assert isinstance(parsed, dict)


def test_schema_column_per_row(gemma_tok, cfg):
    section = {"schema_column": "schema"}
    row = {
        "schema": json.dumps({"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2})
    }
    text, _ = _run(section, gemma_tok, cfg, row=row)
    assert validate_output(section, text, row)[0] and len(json.loads(text)) == 2
    with pytest.raises(ValueError, match="row has no column 'schema'"):
        build_hook(section, gemma_tok, [1], max_new_tokens=8, canvas_length=8, config=cfg, row={},
                   pad_token_id=0)


def test_refusals_name_keyword_and_minimum_length(gemma_tok, cfg):
    with pytest.raises(UnsupportedSchema, match="unsupported: multipleOf"):
        build_hook(
            {"json_schema": {"type": "integer", "multipleOf": 2}},
            gemma_tok,
            [1],
            max_new_tokens=8,
            canvas_length=8,
            config=cfg,
            pad_token_id=0,
        )
    need = check_feasible({"json_schema": PERSON}, gemma_tok, [1], max_new_tokens=1000, config=cfg)
    assert need > 5
    with pytest.raises(InfeasibleConstraint, match=f"needs at least {need} new tokens"):
        build_hook(
            {"json_schema": PERSON}, gemma_tok, [1], max_new_tokens=need - 1, canvas_length=8, config=cfg,
            pad_token_id=0,
        )
    with pytest.raises(ValueError, match="exactly one of"):
        build_hook(
            {"regex": "a", "choice": ["a"]}, gemma_tok, [1], max_new_tokens=8, canvas_length=8, config=cfg,
            pad_token_id=0,
        )


def test_pipeline_call_shape(gemma_tok, cfg):
    """backend.py passes a spec object and the model config; rows are PreparedRow-like (.extra)."""
    spec = types.SimpleNamespace(
        json_schema=None, pydantic=None, regex=None, choice=None, schema_column="s", compile_timeout_s=30.0
    )
    # the pad id comes from the config: text_config's here (the tiny config's generation_config sets none)
    text = dataclasses.replace(DiffusionGemmaConfig.tiny().text, pad_token_id=3)
    model_cfg = dataclasses.replace(DiffusionGemmaConfig.tiny(), text=text, eos_token_ids=(1,),
                                    canvas_length=8)
    row = types.SimpleNamespace(extra={"s": {"type": "boolean"}})
    hook = build_hook(spec, gemma_tok, model_cfg, row=row, config=cfg)
    assert (hook.pad_token_id, hook.canvas_length, hook.dfa.eos_ids.tolist()) == (3, 8, [1])
    gen = dataclasses.replace(model_cfg.generation, pad_token_id=5)  # generation_config.json's pad wins
    assert build_hook(spec, gemma_tok, dataclasses.replace(model_cfg, generation=gen), row=row,
                      config=cfg).pad_token_id == 5
    tokens, _ = rollout(hook, gemma_tok.get_vocab_size(), max_new_tokens=16, canvas=8, seed=1)
    text = decode_text(hook, tokens[: tokens.index(1)])
    status, js, err = check_output(spec, text, types.SimpleNamespace(finish_reason="eos"), row=row)
    assert status == "ok" and json.loads(js) in (True, False) and err is None
    assert check_output({"json_schema": PERSON}, '{"name": 1}')[0] == "invalid"


def test_validate_output_rejects(gemma_tok):
    assert not validate_output({"json_schema": PERSON}, '{"name": "abcdefg", "age": 20}')[0]
    assert not validate_output({"json_schema": PERSON}, "not json")[0]
    assert not validate_output({"regex": "[0-9]+"}, "12a")[0]
    assert not validate_output({"choice": ["a", "b"]}, "c")[0]
    assert not validate_output({"pydantic": "tests.constraints.pyd_models:Person"}, '{"name": "x"}')[0]


def test_worker_compile_cache_and_timeout(gemma_tok, tmp_path):
    vocab = token_bytes(gemma_tok)
    cfg = CompileConfig(cache_dir=tmp_path, timeout_s=60)
    dfa = compile_regex('"[a-z]{1,4}"', vocab, [1], cfg)  # in the bounded worker process
    assert dfa.n_states > 2 and len(list(tmp_path.glob("*.npz"))) == 1
    again = compile_regex('"[a-z]{1,4}"', vocab, [1], cfg)  # from the disk cache (no memory cache here)
    assert (again.edge_dst == dfa.edge_dst).all()
    slow = CompileConfig(cache_dir=tmp_path, timeout_s=0.01)
    with pytest.raises(CompileError, match="timeout"):
        compile_regex('"[a-z]{1,5}"', vocab, [1], slow)


def test_check_schema_command(gemma_tok, tmp_path, capsys):
    from jobs import cmd_check_schema

    tok_path = tmp_path / "tokenizer.json"
    gemma_tok.save(str(tok_path))
    (tmp_path / "ok.json").write_text(json.dumps(PERSON))
    (tmp_path / "bad.json").write_text(json.dumps({"type": "string", "pattern": "^a(?=b)"}))  # a lookahead
    import argparse

    p = argparse.ArgumentParser()
    cmd_check_schema.add_parser(p)
    args = p.parse_args(
        [
            str(tmp_path / "ok.json"),
            str(tmp_path / "bad.json"),
            "--tokenizer",
            str(tok_path),
            "--timeout",
            "60",
        ]
    )
    rc = cmd_check_schema.run(args)
    out = capsys.readouterr().out
    assert rc == 1
    assert "ok.json: supported" in out and "valid=yes" in out
    assert "bad.json: unsupported: pattern" in out
    assert "supported 1/2 (50.0%), valid output 1/2 (50.0%)" in out
