"""Sampler settings vs held-out extraction accuracy on the shipped small model (reference mode).

Question it answers: are the small model's extraction misses decoding choices (sampling temperature, how many
tokens the entropy bound commits per step) or the model's own conditionals? Each row decodes the same held-out
examples with one (steps, t_max, t_min, entropy_bound) setting and prints exact match, per-field accuracy and
tokens per forward. Lower temperature lowers every entropy, so the bound commits more tokens per step (more
parallel); a lower bound or a higher temperature commits fewer (closer to one token per step).

Usage: OMP_NUM_THREADS=1 python bench/decode_settings.py [--model DIR] [--n 100]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import DiffusionGemma, load_tokenizer  # noqa: E402
from train.evaluate import evaluate_family  # noqa: E402

ASSET = Path(__file__).resolve().parents[1] / "model" / "assets" / "dgbatch-small"
# (steps, t_max, t_min, entropy_bound); the first row is the checkpoint's generation_config
SETTINGS = [(48, 0.8, 0.4, 0.1), (12, 0.8, 0.4, 0.1), (48, 0.4, 0.1, 0.1), (12, 0.4, 0.1, 0.1),
            (48, 0.1, 0.02, 0.1), (48, 0.8, 0.4, 0.02), (48, 0.8, 0.4, 0.005), (48, 1.0, 0.7, 0.1),
            (48, 1.0, 0.7, 0.02)]


def run(model_dir: str, n: int) -> list[dict]:
    torch.set_num_threads(1)
    model = DiffusionGemma.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = load_tokenizer(model_dir)
    rows = []
    for steps, t_max, t_min, bound in SETTINGS:
        r = evaluate_family(model, tok, "extraction", n, steps, constrained=False, t_max=t_max, t_min=t_min,
                            entropy_bound=bound)
        rows.append({"steps": steps, "t_max": t_max, "t_min": t_min, "entropy_bound": bound,
                     "exact": r["exact"], "valid": r["valid"], "fields": r["fields"],
                     "tokens_per_forward": round(r["tokens_per_forward"], 2), "seconds": r["seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ASSET))
    ap.add_argument("--n", type=int, default=100, help="held-out extraction examples")
    args = ap.parse_args(argv)
    rows = run(args.model, args.n)
    print("\n| steps | t_max -> t_min | entropy bound | exact | tokens/forward | name | city | order_id "
          "| product |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = r["fields"]
        pct = " | ".join(f"{100 * f[k]:.0f}%" for k in ("name", "city", "order_id", "product"))
        print(f"| {r['steps']} | {r['t_max']} -> {r['t_min']} | {r['entropy_bound']} "
              f"| {100 * r['exact']:.0f}% | {r['tokens_per_forward']} | {pct} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
