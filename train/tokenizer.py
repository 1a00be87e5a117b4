"""Fit the shipped small model's Gemma-style tokenizer with the `tokenizers` library.

Gemma layout, so the loading code that serves the real checkpoint serves this one unchanged:
* BPE with byte fallback (`<0x00>`..`<0xFF>` are ordinary vocabulary entries, so no text is ever `<unk>`),
  spaces normalised to `▁`, no prefix space, digits split one by one, `\\n` its own token;
* the special and control tokens at Gemma 4's ids: <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4
  <|tool_response>=50 <|think|>=98 <|channel>=100 <channel|>=101 <|turn>=105 <turn|>=106 and "\\n"=107;
  the other low ids are `<unusedN>` placeholders, as in Gemma;
* `<bos>` added by the post-processor (add_bos_token), left padding, and the Gemma-4 chat template.

Only training-split text is used (see train/synthdata.py), so held-out entity values are never merged whole.
Run: `python -m train.tokenizer --out model/assets/dgbatch-small`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer

from train.synthdata import tokenizer_corpus

VOCAB_SIZE = 3072
# Gemma 4 ids of the control tokens we use; every other id below FIRST_BYTE_ID is an <unusedN> filler.
SPECIAL_IDS = {
    "<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "<|tool_response>": 50, "<|think|>": 98,
    "<|channel>": 100, "<channel|>": 101, "<|turn>": 105, "<turn|>": 106,
}
NEWLINE_ID = 107
FIRST_BYTE_ID = 108
ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = ROOT / "model" / "chat_template.jinja"

def _special_table() -> list[str]:
    by_id = {i: t for t, i in SPECIAL_IDS.items()}
    return [by_id.get(i, f"<unused{i}>") for i in range(NEWLINE_ID)]


def _pipeline(tok: Tokenizer) -> None:
    tok.normalizer = normalizers.Replace(" ", "▁")
    # Pieces never cross a letter/non-letter boundary: runs of letters, single digits, "\n", and runs of
    # spaces and punctuation. A word then tokenizes the same wherever it stands, so a value copied from a
    # message into JSON (`from Kara.` -> `"Kara",`) is the same token sequence in both places and extraction
    # is a plain copy. (Attaching `▁` to the next word, as SentencePiece does, gives `▁Kara` in text but
    # `▁"K` `ara` in JSON, and a small model then drops or doubles the middle pieces of unseen names.)
    tok.pre_tokenizer = pre_tokenizers.Split(
        Regex("\\p{L}+|\\p{N}|\n|[^\\p{L}\\p{N}\n]+"), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])


def build_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Fit BPE merges on `texts`, then lay the vocabulary out Gemma-style: specials, "\\n", bytes, merges."""
    n_fixed = FIRST_BYTE_ID + 256
    if vocab_size <= n_fixed + 64:
        raise ValueError(f"vocab_size {vocab_size} leaves no room for merges (fixed ids: {n_fixed})")
    scratch = Tokenizer(models.BPE())
    _pipeline(scratch)
    chat_words = ["user\n", "model\n", "system\n", "thought\n"] * 50
    scratch.train_from_iterator(texts + chat_words, BpeTrainer(
        vocab_size=vocab_size - n_fixed + 1, show_progress=False, special_tokens=[], limit_alphabet=200))
    learned = json.loads(scratch.to_str())["model"]
    vocab = {t: i for i, t in enumerate(_special_table())}
    vocab["\n"] = NEWLINE_ID
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = FIRST_BYTE_ID + b
    for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if t not in vocab:
            vocab[t] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(bpe)
    _pipeline(tok)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _special_table()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", SPECIAL_IDS["<bos>"])])
    if tok.get_vocab_size() > vocab_size:
        raise AssertionError(f"vocabulary grew to {tok.get_vocab_size()} > {vocab_size}")
    return tok


def chat_template() -> str:
    """The model package's Gemma-4 template, shipped unchanged beside the tokenizer."""
    return TEMPLATE_PATH.read_text()


def save(tok: Tokenizer, out: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json (GemmaTokenizer form) and chat_template.jinja."""
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "special": True} for i, t in enumerate(_special_table())}
    cfg = {
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added,
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "mask_token": "<mask>", "padding_side": "left", "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000, "tokenizer_class": "GemmaTokenizer",
        "spaces_between_special_tokens": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "chat_template.jinja").write_text(chat_template())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "model" / "assets" / "dgbatch-small")
    ap.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    ap.add_argument("--n-examples", type=int, default=6000)
    args = ap.parse_args(argv)
    tok = build_tokenizer(tokenizer_corpus(args.n_examples), args.vocab_size)
    save(tok, args.out)
    print(f"wrote {args.out} (vocab {tok.get_vocab_size()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
