"""Structured-output cost: compile time, DFA size and DP time per canvas at V = 32k and 262k.

Three schemas (small: a 3-label choice; medium: a person with 4 fields and maxLength; large: 7 fields with
maxLength, enum, array, nested object). Vocabularies: the shipped small model's Gemma-style tokenizer grown
to 32k / 262k byte strings by `synthetic_vocab` (joined pieces; training a 262k BPE on this box is not
practical, and the automaton depends only on the byte strings). DP time is one `ConstraintHook.commit` on a
C=256 canvas of random fp32 logits (includes the O(C*V) class-max pass, also shown on its own: at V=262k it
is most of the DP for all but the largest schema), with the default compiled DP (dp_numba.py) and with the
numpy reference (DGBATCH_DP=numpy), interleaved repeat by repeat so both see the same load; one untimed
commit first (numba's compile or cache load, and the per-constraint table preparation). Overhead is
relative to one decoder forward of a tiny-geometry DiffusionGemma with the same vocabulary (C=256, 64
context tokens). Times are CPU seconds of this process (time.process_time; one thread), so other load on a
shared box inflates them less than wall-clock time; on an idle box the two agree.

    OMP_NUM_THREADS=1 .venv/bin/python bench/constraints.py [--vocab 32768 262144] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from constraints import dp, dp_numba  # noqa: E402
from constraints.choice import choice_regex  # noqa: E402
from constraints.dfa import build_token_dfa, build_trie  # noqa: E402
from constraints.hook import ConstraintHook  # noqa: E402
from constraints.output_check import validate_output  # noqa: E402
from constraints.schema_regex import schema_to_regex  # noqa: E402
from constraints.vocab_bytes import token_bytes  # noqa: E402
from model import DiffusionGemma, DiffusionGemmaConfig  # noqa: E402
from tests.constraints.tok_factory import gemma_style, synthetic_vocab  # noqa: E402

_S = {"type": "string"}
SCHEMAS = {
    "small (3-label choice)": {"choice": ["positive", "negative", "neutral"]},
    "medium (person, 4 fields)": {
        "json_schema": {
            "type": "object",
            "properties": {
                "name": {**_S, "maxLength": 40},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "email": {**_S, "maxLength": 40},
                "city": {**_S, "maxLength": 30},
            },
            "required": ["name", "age", "email", "city"],
        }
    },
    "large (7 fields)": {
        "json_schema": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": 999999},
                "title": {**_S, "maxLength": 80},
                "summary": {**_S, "maxLength": 200},
                "tags": {"type": "array", "items": {**_S, "maxLength": 20}, "maxItems": 5},
                "status": {"enum": ["draft", "review", "published", "archived"]},
                "author": {
                    "type": "object",
                    "properties": {"name": {**_S, "maxLength": 40}, "email": {**_S, "format": "email"}},
                    "required": ["name"],
                },
                "score": {"type": "number", "minimum": 0, "maximum": 10},
            },
            "required": ["id", "title", "summary", "status", "author"],
        }
    },
}


def base_vocab() -> tuple[list[bytes | None], str]:
    path = ROOT / "model/assets/dgbatch-small/tokenizer.json"
    if path.exists():
        from tokenizers import Tokenizer

        return token_bytes(Tokenizer.from_file(str(path))), "shipped dgbatch-small tokenizer"
    return token_bytes(gemma_style(4096)), "gemma-style BPE trained here (4096)"


def forward_time(V: int, C: int = 256, repeat: int = 3) -> float:
    """Seconds for one decoder forward of a tiny-geometry model with vocabulary V."""
    cfg = DiffusionGemmaConfig.tiny()
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=V), canvas_length=C)
    model = DiffusionGemma(cfg).eval()
    cache = model.new_cache(1, 64 + C)
    with torch.no_grad():
        ids = torch.randint(0, V, (1, 64))
        model.encode(ids, cache, positions_BT=torch.arange(64)[None])
        canvas = torch.randint(0, V, (1, C))
        pos = torch.arange(64, 64 + C)[None]
        model.decode(canvas, cache, positions_BC=pos)
        times = []
        for _ in range(repeat):
            t0 = time.process_time()
            model.decode(canvas, cache, positions_BC=pos)
            times.append(time.process_time() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[32768, 262144])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--canvas", type=int, default=256)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base, desc = base_vocab()
    print(f"base vocabulary: {desc} ({len(base)}); grown synthetically to the target sizes")
    for V in args.vocab:
        vocab = synthetic_vocab(base, V)
        t0 = time.perf_counter()
        trie = build_trie(vocab)
        trie_s = time.perf_counter() - t0
        fwd = forward_time(V, args.canvas)
        print(
            f"\nV={V}: vocabulary trie {trie_s:.2f} s (once per tokenizer); "
            f"tiny-model decoder forward {fwd * 1000:.1f} ms"
        )
        print(
            f"| schema | build s | states | classes | class edges | DP ms / canvas (C={args.canvas}), numba "
            "| numpy DP ms | of which class max ms (numba) | DP / forward |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for name, section in SCHEMAS.items():
            regex = (
                choice_regex(section["choice"])
                if "choice" in section
                else schema_to_regex(section["json_schema"])
            )
            t0 = time.perf_counter()
            dfa = build_token_dfa(regex, vocab, [1], trie=trie)
            build_s = time.perf_counter() - t0
            hook = ConstraintHook(
                dfa, pad_token_id=0, max_new_tokens=4 * args.canvas, canvas_length=args.canvas
            )
            g = torch.Generator().manual_seed(0)
            times, np_times, cm_times, valid = [], [], [], True
            hook.commit(
                torch.zeros(args.canvas, V),
                hook.initial_state(),
                tokens_left=4 * args.canvas,
                last_canvas=False,
            )
            for _ in range(args.repeat):
                logits = torch.randn(args.canvas, V, generator=g) * 3
                state, left, toks = hook.initial_state(), 4 * args.canvas, []
                dp.BACKEND = "numpy"
                t0 = time.process_time()
                ref, _, _ = hook.commit(logits, state, tokens_left=left, last_canvas=False)
                np_times.append(time.process_time() - t0)
                dp.BACKEND = "numba"
                t0 = time.process_time()
                out, state, fin = hook.commit(logits, state, tokens_left=left, last_canvas=False)
                times.append(time.process_time() - t0)
                valid &= bool(torch.equal(ref, out))  # the two backends commit the same tokens
                t0 = time.process_time()
                dp_numba.class_max(hook.tables, logits.numpy())
                cm_times.append(time.process_time() - t0)
                toks = out.tolist()
                ids = toks[: toks.index(1)] if 1 in toks else toks
                text = b"".join(vocab[t] or b"" for t in ids).decode("utf-8")
                valid &= fin and validate_output(section, text)[0]
            dp_s = statistics.median(times)
            ratio = f"{dp_s / fwd:.2f}x"
            print(
                f"| {name} | {build_s:.2f} | {dfa.n_states} | {dfa.n_classes} | {dfa.edge_src.size} | "
                f"{dp_s * 1000:.1f} | {statistics.median(np_times) * 1000:.1f} | "
                f"{statistics.median(cm_times) * 1000:.1f} | {ratio} |"
                f"{'' if valid else ' INVALID'}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
