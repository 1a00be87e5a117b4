"""`dgbatch check-schema --model DIR` compiles against that checkpoint's tokenizer and its own stop ids."""

from __future__ import annotations

import argparse

from jobs import cmd_check_schema
from model import DiffusionGemmaConfig
from pipeline.model_path import shipped_dir


def test_model_dir_gives_the_checkpoints_eos_ids():
    model_dir = str(shipped_dir())
    vocab, eos = cmd_check_schema._load_vocab(argparse.Namespace(model=model_dir, tokenizer=None))
    assert eos == list(DiffusionGemmaConfig.from_dir(model_dir).eos_token_ids)
    assert len(eos) > 1  # the shipped model stops on <eos>, <turn|> and <|tool_response>
    assert len(vocab) == 3072
