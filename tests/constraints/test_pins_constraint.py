"""Pins with structured output (engine/pins.py, constraints/hook.py with_pins): a JSON skeleton's pinned
keys spanning several canvases (C=16) and its holes filled under a JSON Schema always validate, in the fast
engine and the reference loop; a pin the constraint forbids is refused before any work, naming the pin."""

from __future__ import annotations

import dataclasses
import json

import jsonschema
import pytest
import torch

from constraints import build_hook, check_output
from constraints.hook import InfeasibleConstraint
from engine import generate
from engine.fast import Engine, Request
from engine.params import GenerationParams
from engine.pins import FREE, Pins
from pipeline.pin_templates import template_pins
from tests.constraints.tok_factory import gemma_style

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 6}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
SECTION = {"json_schema": SCHEMA}
SKELETON = json.dumps({"name": "{{hole:6}}", "age": "{{hole:4}}"})


@pytest.fixture(scope="module")
def setup():
    from model import DiffusionGemma, DiffusionGemmaConfig

    torch.manual_seed(0)
    tok = gemma_style(500)
    cfg = dataclasses.replace(DiffusionGemmaConfig.tiny(), eos_token_ids=(1,))
    model = DiffusionGemma(cfg).eval()
    return tok, model


def _encode(tok):
    return lambda s: tok.encode(s, add_special_tokens=False).ids


def test_skeleton_and_schema_always_valid_across_canvases(setup):
    tok, model = setup
    C = model.config.canvas_length
    tp = template_pins("json", SKELETON, _encode(tok), stop_id=1)
    assert tp.tokens_needed > C, "the skeleton must span canvases for this test"
    params = GenerationParams(max_new_tokens=3 * C, max_denoising_steps=3, eos_token_ids=(1,), pad_token_id=0)
    hook = build_hook(SECTION, tok, model.config, max_new_tokens=params.max_new_tokens)
    row_hook = hook.with_pins(tp.pins, params.max_new_tokens)
    reqs = [Request(id=str(s), input_ids=tok.encode("Data").ids, seed=s, params=params, commit_hook=row_hook,
                    pins=tp.pins) for s in range(6)]
    reqs += [Request(id=f"free{s}", input_ids=tok.encode("Data").ids, seed=s, params=params, commit_hook=hook)
             for s in range(2)]
    for c in Engine(model, max_batch_rows=4).generate(reqs):
        assert c.finish_reason in ("eos", "length"), c.error
        text = tok.decode(c.token_ids)
        status, _, err = check_output(SECTION, text, c)
        assert status == "ok", (c.id, text, err)
        jsonschema.validate(json.loads(text), SCHEMA)
        if not c.id.startswith("free"):
            assert text.startswith('{"name": ') and ', "age": ' in text, text
            held = [i for i, t in enumerate(tp.pins.tokens) if t != FREE and c.canvas_tokens[i] != t]
            assert held == [], c.id
    ids = torch.tensor([tok.encode("Data").ids] * 3)
    out = generate(model, ids, seed=0, max_new_tokens=3 * C, max_denoising_steps=3, eos_token_id=[1],
                   pad_token_id=0, commit_hook=row_hook, pins=[tp.pins] * 3)
    for row in out[:, ids.shape[1]:].tolist():
        text = tok.decode([t for t in row if t not in (0, 1)])
        jsonschema.validate(json.loads(text), SCHEMA)


def test_a_pin_the_constraint_forbids_is_refused_before_work(setup):
    tok, model = setup
    hook = build_hook(SECTION, tok, model.config, max_new_tokens=48)
    enc = _encode(tok)
    bad = template_pins("json", json.dumps({"nom": "{{hole:6}}", "age": "{{hole:4}}"}), enc, stop_id=1)
    with pytest.raises(InfeasibleConstraint, match="the pin at output offset"):
        hook.with_pins(bad.pins, 48)
    # a hole too narrow for any valid value: "age" needs at least one digit
    narrow = Pins(tuple(enc('{"name": "a", "age": ')) + (1,))
    with pytest.raises(InfeasibleConstraint):
        hook.with_pins(narrow, 48)
    ok = template_pins("json", SKELETON, enc, stop_id=1)
    assert hook.with_pins(ok.pins, 48).pins == ok.pins
    with pytest.raises(InfeasibleConstraint):  # the template cannot fit the budget
        hook.with_pins(ok.pins, ok.tokens_needed - 1 if ok.tokens_needed > 1 else 1)
