"""Tokenizer: chat template rendering (Gemma-4 turns, no-thinking default), left padding, special ids,
template sources (tokenizer_config.json vs chat_template.jinja), sandboxing."""

from __future__ import annotations

import json

import pytest
import torch
from jinja2.exceptions import SecurityError
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from model import load_tokenizer
from model.tokenizer import DEFAULT_TEMPLATE

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>"]
WORDS = ["\n", "▁", "user", "model", "system", "thought", "hello", "world", "Be", "brief."]


def _write_tokenizer(d, template: str | None = None, in_config: bool = True) -> None:
    """A tiny Gemma-style tokenizer: <pad>=0 <eos>=1 <bos>=2, spaces as '▁', newlines as their own token."""
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Replace(" ", "▁")
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("▁|\n"), behavior="isolated")
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse()])
    tk.add_special_tokens(SPECIALS)
    d.mkdir(parents=True, exist_ok=True)
    tk.save(str(d / "tokenizer.json"))
    cfg = {
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "add_bos_token": True,
        "padding_side": "left",
    }
    template = DEFAULT_TEMPLATE.read_text() if template is None else template
    if in_config:
        cfg["chat_template"] = template
    else:
        (d / "chat_template.jinja").write_text(template)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))


@pytest.fixture
def tok(tmp_path):
    _write_tokenizer(tmp_path / "tok")
    return load_tokenizer(str(tmp_path / "tok"))


def test_special_ids(tok):
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    assert tok.token_to_id("<turn|>") == 5


def test_chat_template_default_no_thinking(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "  hello world \n"}], tokenize=False)
    assert text == "<bos><|turn>user\nhello world<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"
    ids = tok.apply_chat_template([{"role": "user", "content": "hello world"}])
    v = {t: tok.token_to_id(t) for t in SPECIALS + WORDS}
    assert ids == [
        v["<bos>"],
        v["<|turn>"],
        v["user"],
        v["\n"],
        v["hello"],
        v["▁"],
        v["world"],
        v["<turn|>"],
        v["\n"],
        v["<|turn>"],
        v["model"],
        v["\n"],
        v["<|channel>"],
        v["thought"],
        v["\n"],
        v["<channel|>"],
    ]
    assert ids.count(tok.bos_token_id) == 1  # the template writes <bos>; tokenizing must not add another


def test_chat_template_thinking_system_and_history(tok):
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, enable_thinking=True
    )
    assert text == "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nhello<turn|>\n<|turn>model\n"
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "world"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
    ]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False) == (
        "<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nhello<turn|>\n<|turn>model\nworld<turn|>\n"
        "<|turn>user\nhello<turn|>\n"
    )


def test_template_from_jinja_file_and_sandbox(tmp_path):
    _write_tokenizer(tmp_path / "t", template="{{ bos_token }}X{{ messages[0]['content'] }}", in_config=False)
    tok = load_tokenizer(f"file://{tmp_path / 't'}")
    assert tok.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False) == "<bos>Xhello"
    _write_tokenizer(tmp_path / "evil", template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(SecurityError):
        load_tokenizer(str(tmp_path / "evil")).apply_chat_template([{"role": "user", "content": "x"}])


def test_encode_decode_and_left_padding(tok):
    assert tok.encode("hello world") == [2, 15, 10, 16]
    assert tok.encode("hello world", add_special_tokens=False) == [15, 10, 16]
    assert tok.decode(tok.encode("hello world"), skip_special_tokens=True) == "hello world"
    ids, valid = tok.batch_encode(["hello", "hello world", "world"])
    assert ids.tolist() == [[0, 0, 2, 15], [2, 15, 10, 16], [0, 0, 2, 16]]
    assert valid.tolist() == [[False, False, True, True], [True] * 4, [False, False, True, True]]
    assert ids.dtype == torch.long and valid.dtype == torch.bool


def test_unknown_role_and_missing_file(tok, tmp_path):
    with pytest.raises(Exception, match="unsupported chat role: tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(str(tmp_path / "nowhere"))
