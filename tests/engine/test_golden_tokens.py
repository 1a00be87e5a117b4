"""Token ids generated on the shipped model equal a recorded file (tests/engine/data/golden_tokens.json).

Why: the generation layer is reshaped without changing behaviour. This pins every token of fast mode (the
Engine, rows with different settings in one batch, with and without structured output) and of reference mode
on held-out prompts. The file was recorded before the reshaping; regenerate it only when a change is meant to
alter tokens, by running this file with DGBATCH_REGEN_GOLDEN=1, and say so in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from constraints import build_hook
from engine.fast import Engine, Request
from engine.generate import generate
from engine.params import GenerationParams
from model import DiffusionGemma, load_tokenizer
from model.tokenizer import encode_prompt
from pipeline.model_path import shipped_dir
from train import synthdata

GOLDEN = Path(__file__).parent / "data" / "golden_tokens.json"
N_PER_FAMILY = 3


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    model_dir = str(shipped_dir())
    model = DiffusionGemma.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, load_tokenizer(model_dir)


def _prompts(tok) -> list[tuple[str, list[int]]]:
    out = []
    for fam in synthdata.FAMILIES:
        for ex in synthdata.dataset("heldout", N_PER_FAMILY, fam):
            out.append((fam, encode_prompt(tok, ex.prompt)))
    return out


def _fast(model, tok) -> dict[str, list]:
    """One Engine batch: per-row steps and temperature bounds differ, odd rows constrained to their schema."""
    reqs = []
    for i, (fam, ids) in enumerate(_prompts(tok)):
        params = GenerationParams.from_model(model, max_new_tokens=2 * model.config.canvas_length,
                                             max_denoising_steps=(12, 24, 48)[i % 3],
                                             t_max=(0.8, 0.9)[i % 2])
        hook = None
        if i % 2:
            hook = build_hook({"json_schema": synthdata.SCHEMAS[fam]}, tok.tk, model.config,
                              max_new_tokens=params.max_new_tokens,
                              canvas_length=model.config.canvas_length)
        reqs.append(Request(id=str(i), input_ids=ids, seed=100 + i, params=params, commit_hook=hook))
    # a choice row: its label scores take the materialised-logits path
    fam, ids = _prompts(tok)[0]
    params = GenerationParams.from_model(model, max_new_tokens=model.config.canvas_length)
    hook = build_hook({"choice": ["billing", "shipping", "technical", "account"]}, tok.tk, model.config,
                      max_new_tokens=params.max_new_tokens, canvas_length=model.config.canvas_length)
    reqs.append(Request(id="choice", input_ids=ids, seed=5, params=params, commit_hook=hook))
    # canvas_tokens keeps the pads and what followed EOS too; steps and finish reason pin the stop rule
    return {c.id: [c.canvas_tokens, c.finish_reason, c.denoising_steps] for c in Engine(model).generate(reqs)}


def _reference(model, tok) -> list[list[int]]:
    prompts = [ids for _, ids in _prompts(tok)][:4]
    L = max(len(x) for x in prompts)
    input_ids = torch.tensor([[0] * (L - len(x)) + x for x in prompts])
    mask = torch.tensor([[0] * (L - len(x)) + [1] * len(x) for x in prompts])
    out = generate(model, input_ids, mask, mode="reference", seed=7, max_new_tokens=64,
                   max_denoising_steps=16)
    return out.tolist()


def test_tokens_equal_golden(shipped):
    model, tok = shipped
    got = {"fast": _fast(model, tok), "reference": _reference(model, tok)}
    if os.environ.get("DGBATCH_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        rows = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in got["fast"].items()]
        GOLDEN.write_text('{"fast": {\n' + ",\n".join(rows) + '\n},\n"reference": '
                          + json.dumps(got["reference"]) + "}\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got["fast"]) == sorted(want["fast"])
    for rid, ids in want["fast"].items():
        assert got["fast"][rid] == ids, f"fast-mode row {rid} changed"
    assert got["reference"] == want["reference"]
