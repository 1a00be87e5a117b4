"""End to end through the fast engine: a tiny random DiffusionGemma, every row valid under each constraint
kind, constrained output spanning several canvases (C=16)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from constraints import build_hook, check_output
from tests.constraints.tok_factory import gemma_style

SECTIONS = [
    {
        "json_schema": {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 0, "maximum": 999},
                "s": {"type": "string", "maxLength": 12},
            },
            "required": ["n", "s"],
        }
    },
    {"pydantic": "tests.constraints.pyd_models:Person"},
    {"regex": r"[a-z]{3,8}@[a-z]{2,5}\.(com|org)"},
    {"choice": ["yes", "no", "maybe"]},
]


@pytest.fixture(scope="module")
def engine_setup():
    from engine.fast import Engine
    from engine.params import GenerationParams
    from model import DiffusionGemma, DiffusionGemmaConfig

    torch.manual_seed(0)
    tok = gemma_style(500)
    cfg = DiffusionGemmaConfig.tiny()
    cfg = dataclasses.replace(cfg, eos_token_ids=(1,))
    model = DiffusionGemma(cfg).eval()
    params = GenerationParams(max_new_tokens=64, max_denoising_steps=3, eos_token_ids=(1,), pad_token_id=0)
    return tok, model, Engine(model, max_batch_rows=4), params


@pytest.mark.slow
def test_every_row_valid_through_engine(engine_setup):
    from engine.fast import Request

    tok, model, engine, params = engine_setup
    requests, sections = [], []
    for k, section in enumerate(SECTIONS):
        # EOS, canvas length and pad id: the model config's
        hook = build_hook(section, tok, model.config, max_new_tokens=params.max_new_tokens)
        for seed in range(2):
            requests.append(
                Request(
                    id=f"{k}-{seed}",
                    input_ids=tok.encode("Give me data").ids,
                    seed=seed,
                    params=params,
                    commit_hook=hook,
                )
            )
            sections.append(section)
    done = engine.generate(requests)
    assert len(done) == len(requests)
    for req, section, c in zip(requests, sections, done):
        assert c.finish_reason in ("eos", "length"), (req.id, c.error)
        text = tok.decode(c.token_ids)
        status, js, err = check_output(section, text, c)
        assert status == "ok", (req.id, text, err)
        if "choice" in section:
            assert c.hook_state.label_scores and text in section["choice"]
