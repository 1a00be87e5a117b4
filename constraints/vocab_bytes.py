"""The vocabulary as exact byte strings: what each token id appends to the output text.

Two tokenizer families are understood:
- SentencePiece-style BPE (Gemma): '▁' stands for a space and `<0xNN>` tokens (byte fallback) are raw bytes.
- byte-level BPE (GPT-2 style): every character of a token is one byte through the printable-byte alphabet.
Special tokens (and the unknown token) map to None: they never appear inside constrained text.
The constraint automaton walks these bytes, so an error here is an invalid output; tests round-trip every
token against `tokenizers`' own decoder.
"""

from __future__ import annotations

import hashlib
import json
import re

import tokenizers

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def raw_tokenizer(tok) -> tokenizers.Tokenizer:
    """The `tokenizers.Tokenizer` inside `tok` (itself, or a wrapper's .tk/.tokenizer/.backend/._tokenizer;
    `.tk` is model.tokenizer.Tokenizer's, the wrapper the pipeline's replicas hold)."""
    for obj in (
        tok,
        getattr(tok, "tk", None),
        getattr(tok, "tokenizer", None),
        getattr(tok, "backend", None),
        getattr(tok, "_tokenizer", None),
        getattr(tok, "backend_tokenizer", None),
    ):
        if isinstance(obj, tokenizers.Tokenizer):
            return obj
    raise TypeError(f"expected a tokenizers.Tokenizer or a wrapper holding one, got {type(tok).__name__}")


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's reversible byte -> printable character map, inverted (character -> byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars: dict[int, int] = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


def _mentions(node, name: str) -> bool:
    if isinstance(node, dict):
        return node.get("type") == name or any(_mentions(v, name) for v in node.values())
    if isinstance(node, list):
        return any(_mentions(v, name) for v in node)
    return False


def _metaspace_replacement(decoder) -> str:
    """The character the decoder turns into a space ('▁' for SentencePiece vocabularies)."""
    if isinstance(decoder, dict):
        if decoder.get("type") == "Replace" and decoder.get("content") == " ":
            pat = decoder.get("pattern", {})
            return pat.get("String", "▁") if isinstance(pat, dict) else "▁"
        if decoder.get("type") == "Metaspace":
            return decoder.get("replacement", "▁")
        for v in decoder.get("decoders", []) or []:
            r = _metaspace_replacement(v)
            if r:
                return r
    return ""


def token_bytes(tok) -> list[bytes | None]:
    """bytes per token id (index = id); None for special tokens that never occur in constrained text."""
    raw = raw_tokenizer(tok)
    spec = json.loads(raw.to_str())
    model, decoder = spec.get("model", {}), spec.get("decoder") or {}
    size = raw.get_vocab_size(with_added_tokens=True)
    out: list[bytes | None] = [None] * size
    vocab = raw.get_vocab(with_added_tokens=False)
    if _mentions(decoder, "ByteLevel"):
        alphabet = _byte_alphabet()
        for piece, i in vocab.items():
            try:
                out[i] = bytes(alphabet[ch] for ch in piece)
            except KeyError:
                raise ValueError(f"token {i} {piece!r} is outside the byte-level alphabet") from None
    elif model.get("type") in ("BPE", "Unigram"):
        space = _metaspace_replacement(decoder) or "▁"
        fallback = bool(model.get("byte_fallback")) or _mentions(decoder, "ByteFallback")
        for piece, i in vocab.items():
            m = _BYTE_TOKEN.match(piece) if fallback else None
            out[i] = bytes([int(m.group(1), 16)]) if m else piece.replace(space, " ").encode("utf-8")
    else:
        raise ValueError(f"unsupported tokenizer model {model.get('type')!r} for constrained output")
    unk = model.get("unk_token")
    if unk is not None and unk in vocab:
        out[vocab[unk]] = None
    for added in spec.get("added_tokens", []):
        out[added["id"]] = None if added.get("special", True) else added["content"].encode("utf-8")
    for i, b in enumerate(out):
        if b == b"":
            out[i] = None  # an empty token would be a free self-loop; never useful, never needed
    return out


def decode_bytes(vocab: list[bytes | None], token_ids) -> bytes:
    """Exact bytes of a token sequence (special tokens contribute nothing)."""
    return b"".join(vocab[t] or b"" for t in token_ids)


def vocab_hash(vocab: list[bytes | None]) -> str:
    """A content hash of the byte vocabulary (the part of a tokenizer the automaton depends on)."""
    h = hashlib.sha256()
    for b in vocab:
        h.update(b"\xff\x00" if b is None else len(b).to_bytes(2, "little") + b)
    return h.hexdigest()[:32]
