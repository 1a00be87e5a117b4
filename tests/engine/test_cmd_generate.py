"""`dgbatch generate` end to end on a tiny checkpoint with the small test tokenizer (V=3072)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tiny import build_hf

from jobs.cli import main

ASSETS = Path(__file__).resolve().parents[2] / "model" / "assets" / "dgbatch-small"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    build_hf(seed=0, canvas_length=8, vocab_size=3072).save_pretrained(d)
    # Only the tokenizer side of the shipped model: the weights/config stay the tiny random ones built above.
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(ASSETS / name, d / name)
    return d


@pytest.mark.parametrize("mode,live", [("fast", "on"), ("reference", "off")])
def test_generate_prints_one_answer_per_prompt(ckpt, capsys, mode, live):
    rc = main(
        [
            "generate",
            "--model",
            str(ckpt),
            "--prompt",
            "Hello there",
            "--prompt",
            "Bye",
            "--mode",
            mode,
            "--steps",
            "2",
            "--max-new-tokens",
            "8",
            "--dtype",
            "float32",
            "--live",
            live,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "=== [0] Hello there" in out and "=== [1] Bye" in out
    assert ("\x1b[2K[0]" in out) == (live == "on")


def test_generate_bad_model_dir(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "cannot load" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_generate_structured_output_flags(capsys, mode):
    import json
    import re

    base = ["generate", "--model", str(ASSETS), "--mode", mode, "--steps", "4", "--max-new-tokens", "32",
            "--dtype", "float32", "--prompt", "Order 44401 for Keaden arrived late."]
    assert main(base + ["--regex", "[0-9]{5}"]) == 0
    answer = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch("[0-9]{5}", answer), answer
    labels = ["billing", "technical", "shipping"]
    assert main(base + [a for lab in labels for a in ("--choice", lab)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] in labels
    scores = json.loads(lines[-1].removeprefix("scores: "))
    assert scores["label"] == lines[-2]
    if mode == "fast":  # the engine hands back the final constraint state, which holds the label scores
        assert set(scores["scores"]) == set(labels)


def test_generate_structured_output_errors(capsys):
    base = ["generate", "--model", str(ASSETS), "--prompt", "x", "--dtype", "float32"]
    assert main(base + ["--json-schema", '{"type": "string", "pattern": "a(?=b)"}']) == 2  # a lookahead
    assert "unsupported: pattern" in capsys.readouterr().err
    assert main(base + ["--steering", "valid_sampling"]) == 2
    assert "needs a constraint" in capsys.readouterr().err
    assert main(base + ["--regex", "[0-9]{40}", "--max-new-tokens", "8"]) == 2
    assert "max_new_tokens" in capsys.readouterr().err
