"""Tokenizers for constraint tests and benchmarks, built locally with `tokenizers` (no downloads).

gemma_style: SentencePiece-like BPE as in Gemma's tokenizer.json: spaces normalised to '▁', no prefix space,
byte fallback through 256 `<0xNN>` vocabulary tokens, specials <pad>=0 <eos>=1 <bos>=2 <unk>=3.
byte_level: GPT-2 style byte-level BPE. `synthetic_vocab` grows a trained vocabulary to a target size by
adding concatenations of existing pieces (a 262k BPE is too slow to train here; the automaton only cares
about the byte strings, so a synthetic vocabulary exercises the same code paths and sizes).
"""

from __future__ import annotations

import json
import random

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
_WORDS = (
    "the of and to in is that for it as with was on be by at this from or an are not have which name age "
    "city email date price total user id value items type status order product address phone country "
    "description title amount quantity true false null number string object array location temperature "
    "weather movie book author year genre rating review search query result count limit start end time"
).split()


def corpus(n_lines: int = 3000, seed: int = 0) -> list[str]:
    """English-like words, JSON objects and numbers: enough for merges over typical JSON pieces."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        if i % 2:
            obj = {
                rng.choice(_WORDS): rng.choice(
                    [rng.randint(-999, 99999), rng.random(), rng.choice(_WORDS), True, None, [1, 2]]
                )
                for _ in range(rng.randint(1, 5))
            }
            lines.append(json.dumps(obj, ensure_ascii=False))
        else:
            words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
            lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ", é ü ß 日本"]))
    return lines


def gemma_style(vocab_size: int = 1000, seed: int = 0) -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS + byte_tokens, show_progress=False, min_frequency=2
    )
    tok.train_from_iterator(corpus(seed=seed), trainer)
    spec = json.loads(tok.to_str())
    # byte tokens are ordinary vocabulary entries (what byte_fallback looks up), not added special tokens
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["content"] in SPECIALS]
    spec["model"]["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(spec))


def byte_level(vocab_size: int = 1000, seed: int = 0) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed=seed), trainer)
    return tok


def synthetic_vocab(base: list[bytes | None], size: int, seed: int = 0) -> list[bytes | None]:
    """`base` grown to `size` distinct byte strings by joining random pairs of existing pieces."""
    rng = random.Random(seed)
    out = list(base)
    seen = {b for b in out if b}
    pieces = [b for b in out if b and len(b) <= 8]
    while len(out) < size:
        b = rng.choice(pieces) + rng.choice(pieces)
        if b not in seen and len(b) <= 16:
            seen.add(b)
            out.append(b)
            if len(b) <= 8:
                pieces.append(b)
    return out
