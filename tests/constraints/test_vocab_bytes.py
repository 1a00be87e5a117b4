"""Every token's bytes agree with the tokenizers library's own decoder (Gemma-style and byte-level BPE)."""

from __future__ import annotations

import pytest

from constraints.vocab_bytes import decode_bytes, raw_tokenizer, token_bytes


def _roundtrip_all(tok):
    vocab = token_bytes(tok)
    assert len(vocab) == tok.get_vocab_size(with_added_tokens=True)
    checked = 0
    for tid, b in enumerate(vocab):
        if b is None:
            continue
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a lone byte piece: checked in sequences below
        assert tok.decode([tid], skip_special_tokens=False) == text, (tid, b)
        checked += 1
    return vocab, checked


def test_gemma_style_every_token(gemma_tok):
    vocab, checked = _roundtrip_all(gemma_tok)
    assert checked > 300
    assert vocab[0] is None and vocab[1] is None and vocab[2] is None  # <pad> <eos> <bos>
    by_piece = {p: i for p, i in gemma_tok.get_vocab().items()}
    assert vocab[by_piece["<0x41>"]] == b"A" and vocab[by_piece["<0xC3>"]] == b"\xc3"
    # '▁' pieces are spaces; byte-fallback sequences decode to their UTF-8 characters
    assert any(b and b.startswith(b" ") for b in vocab)
    for text in ["Hello world", " lead", "é ü 日本 🙂", '{"a": [1, 2.5e3]}', "tab\there\n"]:
        ids = gemma_tok.encode(text).ids
        assert decode_bytes(vocab, ids).decode("utf-8") == text
        assert gemma_tok.decode(ids) == text


def test_byte_level_every_token(bytelevel_tok):
    vocab, checked = _roundtrip_all(bytelevel_tok)
    assert checked > 300
    for text in ["Hello world", "é ü 日本 🙂", '{"a": [1, 2]}']:
        ids = bytelevel_tok.encode(text).ids
        assert decode_bytes(vocab, ids).decode("utf-8") == text


def test_wrapper_objects_are_unwrapped(gemma_tok):
    class Wrapper:
        def __init__(self, t):
            self.tokenizer = t

    assert raw_tokenizer(Wrapper(gemma_tok)) is gemma_tok
    with pytest.raises(TypeError, match="tokenizers.Tokenizer"):
        raw_tokenizer(object())


def test_shipped_tokenizer_if_present():
    from pathlib import Path

    from tokenizers import Tokenizer

    path = Path(__file__).resolve().parents[2] / "model/assets/dgbatch-small/tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    _, checked = _roundtrip_all(tok)
    assert checked > 1000
