"""The shipped Gemma-style tokenizer: byte-fallback round trip, Gemma-4 special ids, chat-template ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from model import load_tokenizer
from model.config import DiffusionGemmaConfig
from model.tokenizer import DEFAULT_TEMPLATE
from train import synthdata
from train.tokenizer import SPECIAL_IDS, build_tokenizer

ASSET = str(Path(__file__).resolve().parents[2] / "model" / "assets" / "dgbatch-small")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ASSET)


@pytest.mark.parametrize("text", ["Hello world", "  two  spaces\n\nand lines\t", "ünïcödé ✓ 😀 日本語",
                                  '{"name": "Zyx Qo", "order_id": 12345}', "<0x41> literal"])
def test_round_trip(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert 3 not in ids  # byte fallback: never <unk>


def test_special_ids_match_gemma4(tok):
    raw = Tokenizer.from_file(f"{ASSET}/tokenizer.json")
    for token, tid in SPECIAL_IDS.items():
        assert raw.token_to_id(token) == tid, token
    assert raw.token_to_id("\n") == 107
    assert raw.get_vocab_size() == DiffusionGemmaConfig.from_dir(ASSET).text.vocab_size
    assert tok.encode("hi")[0] == 2  # add_bos_token
    cfg = json.loads(open(f"{ASSET}/tokenizer_config.json").read())
    assert cfg["padding_side"] == "left" and cfg["add_bos_token"] is True


def test_chat_template_ids(tok):
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi there"}], add_generation_prompt=True)
    raw = Tokenizer.from_file(f"{ASSET}/tokenizer.json")
    user, model, thought = (raw.token_to_id(w) for w in ("user", "model", "thought"))
    body = tok.encode("Hi there", add_special_tokens=False)
    assert ids == [2, 105, user, 107, *body, 106, 107, 105, model, 107, 100, thought, 107, 101]
    assert open(f"{ASSET}/chat_template.jinja").read() == DEFAULT_TEMPLATE.read_text()


def test_shipped_tokenizer_is_reproducible():
    fresh = json.loads(build_tokenizer(synthdata.tokenizer_corpus(6000)).to_str())
    shipped = json.loads(open(f"{ASSET}/tokenizer.json").read())
    assert fresh["model"]["vocab"] == shipped["model"]["vocab"]
    assert fresh["model"]["merges"] == shipped["model"]["merges"]


def test_copied_values_tokenize_as_in_the_text(tok):
    # Extraction copies a name from prose into JSON; the pre-tokenizer keeps letters apart from spaces and
    # quotes so the copied value is the same token sequence in both places (a plain copy for the model).
    def contains(ids: list[int], part: list[int]) -> bool:
        return any(ids[i:i + len(part)] == part for i in range(len(ids) - len(part) + 1))

    checked = 0
    for ex in synthdata.dataset("heldout", 60, family="extraction"):
        prompt = tok.encode(ex.prompt, add_special_tokens=False)
        answer = tok.encode(ex.answer, add_special_tokens=False)
        for key in ("name", "city", "product", "order_id"):
            value = tok.encode(str(ex.target[key]), add_special_tokens=False)
            assert contains(prompt, value) and contains(answer, value), (key, ex.target[key])
            checked += 1
    assert checked == 240
