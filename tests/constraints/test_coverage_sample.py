"""A deterministic sample of the real function-call schemas (JSONSchemaBench Glaiveai2K, shipped in
tests/constraints/data/glaive_sample/ with its MIT license note): each either compiles and yields valid output
under random logits, or is refused with "unsupported: <keyword>"."""

from __future__ import annotations

import json
from pathlib import Path

from constraints.vocab_bytes import token_bytes
from jobs.cmd_check_schema import check_one

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data" / "glaive_sample"


def test_glaive_sample(gemma_tok):
    sample = sorted(DATA.glob("*.json"))  # every 85th file of the split, sorted by name: 20 schemas
    assert len(sample) == 20, f"sample missing at {DATA}"
    shipped = ROOT / "model/assets/dgbatch-small/tokenizer.json"
    if shipped.exists():
        from tokenizers import Tokenizer

        vocab = token_bytes(Tokenizer.from_file(str(shipped)))
    else:
        vocab = token_bytes(gemma_tok)
    valid = 0
    for f in sample:
        res = check_one(json.loads(f.read_text()), vocab, [1], max_new_tokens=512, canvas_length=32, seed=0)
        if res["supported"]:
            assert res["valid"], (f.name, res)
            valid += 1
        else:
            assert res["error"].startswith("unsupported: "), (f.name, res)
    assert valid >= 18
