"""Coverage of the structured-output compiler on real schemas (JSONSchemaBench Glaiveai2K).

For each schema: translate, compile against a Gemma-style tokenizer, generate under random logits through
the commit DP (multi-canvas), validate with jsonschema. Counts: supported, valid, unsupported by keyword,
timeouts, crashes, invalid outputs (the last two must be zero). Parallelism 1, one worker with a timeout.

    OMP_NUM_THREADS=1 .venv/bin/python bench/schema_coverage.py [--data DIR] [--tokenizer PATH] [--limit N]

`--data` defaults to the 20-schema sample shipped for the tests (tests/constraints/data/glaive_sample, MIT);
point it at a directory holding the whole split (one schema per .json file) for the full figure.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from constraints.vocab_bytes import token_bytes  # noqa: E402
from jobs.cmd_check_schema import check_many  # noqa: E402

DEFAULT_DATA = ROOT / "tests/constraints/data/glaive_sample"
SHIPPED_TOKENIZER = ROOT / "model/assets/dgbatch-small/tokenizer.json"


def load_tokenizer(path: str | None):
    from tokenizers import Tokenizer

    if path:
        return Tokenizer.from_file(path), path
    if SHIPPED_TOKENIZER.exists():
        return Tokenizer.from_file(str(SHIPPED_TOKENIZER)), str(SHIPPED_TOKENIZER)
    from tests.constraints.tok_factory import gemma_style

    return gemma_style(4096), "trained here: gemma-style BPE, 4096 tokens"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--tokenizer", help="tokenizer.json (default: the shipped small model's)")
    ap.add_argument("--limit", type=int, default=0, help="first N schemas only (0: all)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--canvas-length", type=int, default=32)
    ap.add_argument("--out", help="write per-schema JSON lines here")
    args = ap.parse_args(argv)
    files = sorted(Path(args.data).glob("*.json"))
    if args.limit:
        files = files[: args.limit]
    tok, tok_desc = load_tokenizer(args.tokenizer)
    vocab = token_bytes(tok)
    eos = [tok.token_to_id("<eos>")] if tok.token_to_id("<eos>") is not None else [1]
    print(f"{len(files)} schemas from {args.data}; tokenizer: {tok_desc} (V={len(vocab)}); eos={eos}")
    schemas = [json.loads(f.read_text()) for f in files]
    counts: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    compile_s: list[float] = []
    t0 = time.perf_counter()
    sink = open(args.out, "w") if args.out else None
    results = check_many(
        schemas,
        vocab,
        eos,
        timeout=args.timeout,
        memory_bytes=4 << 30,
        max_new_tokens=args.max_new_tokens,
        canvas_length=args.canvas_length,
        seed=0,
    )
    for i, (f, res) in enumerate(zip(files, results)):
        err = res.get("error", "")
        if res.get("valid"):
            counts["valid"] += 1
            compile_s.append(res["compile_s"])
        elif err.startswith("unsupported"):
            counts["unsupported"] += 1
            reasons[re.sub(r" \(at .*\)$", "", err)] += 1
        elif err.startswith("timeout"):
            counts["timeout"] += 1
        elif err.startswith("INVALID"):
            counts["invalid"] += 1
        else:
            counts["crash_or_other"] += 1
            reasons[err[:100]] += 1
        if not res.get("valid"):
            print(f"  {f.name}: {err}", flush=True)
        if sink:
            sink.write(json.dumps({"file": f.name, **res}) + "\n")
        if (i + 1) % 100 == 0:
            print(f"[{i + 1}/{len(files)}] {dict(counts)} {time.perf_counter() - t0:.0f}s", flush=True)
    n = len(files)
    compile_s.sort()
    print(
        f"\nsummary: {n} schemas in {time.perf_counter() - t0:.0f}s: "
        + ", ".join(f"{k} {v} ({100 * v / n:.1f}%)" for k, v in sorted(counts.items()))
    )
    if compile_s:
        print(
            f"compile time (valid ones): median {compile_s[len(compile_s) // 2]:.3f}s, "
            f"p95 {compile_s[int(len(compile_s) * 0.95)]:.3f}s, max {compile_s[-1]:.3f}s"
        )
    for r, c in reasons.most_common():
        print(f"  {c:4d}  {r}")
    return 0 if counts["invalid"] == 0 and counts["crash_or_other"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
