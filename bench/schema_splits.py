"""JSON Schema coverage by JSONSchemaBench split, with llguidance and XGrammar compiled beside us.

For every split folder under --root (a sample of --per-split schemas, every k-th file by name): our
compile + one generation under random logits + --walks random words of the automaton, each validated with
jsonschema (jobs/cmd_check_schema.py `check_many`, one worker with a timeout), and, when installed, whether
llguidance and XGrammar compile the same schema against the same tokenizer (each in its own worker with the
same timeout). Prints per split: compiled %, compiled-and-valid %, invalid outputs (must be 0), compile time
p50/p95/max (timeouts count as the timeout), the top refusal reasons, and the anchors' compiled %.

    OMP_NUM_THREADS=1 .venv/bin/python bench/schema_splits.py --root DATA \\
        [--per-split 40] [--timeout 20] [--walks 20] [--splits Snowplow Kubernetes] [--markdown OUT.md]

DATA: one folder per split holding one schema per .json file, as JSONSchemaBench's `data/` folder
(https://github.com/guidance-ai/jsonschemabench, MIT); the repository ships only the small samples its tests
use (tests/constraints/data/).

The anchors need `pip install -e .[bench]` (llguidance, xgrammar, transformers for their tokenizer glue);
a missing one is reported as "not installed" and its column left out.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from constraints.vocab_bytes import token_bytes  # noqa: E402
from jobs.cmd_check_schema import check_many  # noqa: E402

TOKENIZER = ROOT / "model/assets/dgbatch-small/tokenizer.json"


def sample_files(folder: Path, per_split: int) -> list[Path]:
    """Every k-th schema file of the folder (sorted by name), about `per_split` of them (0: all)."""
    files = sorted(folder.glob("*.json"))
    if per_split and len(files) > per_split:
        k = len(files) / per_split
        files = [files[int(i * k)] for i in range(per_split)]
    return files


# --- anchors: each compiles a schema against the shipped tokenizer in a worker ----------------------------
_ANCHOR: dict = {}


def _init_anchor(name: str, tokenizer_file: str) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file, eos_token="<eos>")
    if name == "llguidance":
        import llguidance.hf

        _ANCHOR["tok"] = llguidance.hf.from_tokenizer(tok)
    else:
        import xgrammar as xgr

        _ANCHOR["compiler"] = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok), max_threads=1)


def _anchor_compile(args: tuple[str, str]) -> str:
    """'' when the anchor compiles the schema (text), else its error's first line."""
    name, text = args
    try:
        if name == "llguidance":
            from llguidance import LLMatcher

            m = LLMatcher(_ANCHOR["tok"], LLMatcher.grammar_from_json_schema(text))
            return m.get_error().splitlines()[0] if m.is_error() else ""
        _ANCHOR["compiler"].compile_json_schema(text)
        return ""
    except Exception as e:  # noqa: BLE001 - the anchor's refusal is the measurement
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]


def anchor_available(name: str) -> bool:
    # genuinely optional: llguidance, xgrammar and transformers are the `bench` extra (pyproject.toml),
    # installed by no test; a missing anchor is reported, not a failure
    try:
        __import__(name)
        __import__("transformers")
    except ImportError:
        return False
    return True


def run_anchor(name: str, texts: list[str], timeout: float) -> list[str]:
    """The anchor's verdict per schema ('' = compiled), one worker restarted after a timeout."""
    ctx = mp.get_context("spawn")  # the anchors start native thread pools: never fork them
    pool, out = None, []
    try:
        for text in texts:
            if pool is None:
                pool = ctx.Pool(1, _init_anchor, (name, str(TOKENIZER)))
            job = pool.apply_async(_anchor_compile, ((name, text),))
            try:
                out.append(job.get(timeout))
            except mp.TimeoutError:
                pool.terminate()
                pool = None
                out.append(f"timeout: over {timeout:.0f} s")
    finally:
        if pool is not None:
            pool.terminate()
    return out


# --- ours -------------------------------------------------------------------------------------------------
def summarise(results: list[dict], timeout: float) -> dict:
    """Counts, compile-time percentiles and refusal reasons of one split's check_many results."""
    n = len(results)
    reasons: collections.Counter = collections.Counter()
    times = []
    compiled = valid = invalid = 0
    for res in results:
        err = res.get("error", "")
        if res.get("supported"):
            compiled += 1
            times.append(res["compile_s"])
        elif err.startswith("timeout"):
            times.append(timeout)
        if res.get("valid"):
            valid += 1
        elif err.startswith("INVALID") or err.startswith("CRASH"):
            invalid += 1
        if not res.get("supported"):
            reasons[re.sub(r"\s*\(at .*$", "", re.sub(r"'[^']*'|\d+", "_", err))[:70]] += 1
    times.sort()

    def pct(p: float) -> float:
        return times[min(len(times) - 1, int(len(times) * p))] if times else 0.0

    return dict(
        n=n,
        compiled=compiled,
        valid=valid,
        invalid=invalid,
        p50=pct(0.5),
        p95=pct(0.95),
        max=times[-1] if times else 0.0,
        reasons=reasons.most_common(3),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="folder of split folders of *.json schemas (see above)")
    ap.add_argument("--splits", nargs="*", help="split folder names (default: every folder under --root)")
    ap.add_argument("--per-split", type=int, default=40, help="schemas per split, every k-th file (0: all)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per schema (ours and each anchor)")
    ap.add_argument("--walks", type=int, default=20, help="random automaton words validated per schema")
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--no-anchors", action="store_true")
    ap.add_argument("--markdown", help="also write the table as Markdown here")
    ap.add_argument("--jsonl", help="per-schema results (ours and the anchors') as JSON lines")
    args = ap.parse_args(argv)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    vocab = token_bytes(tok)
    eos = [tok.token_to_id("<eos>")] if tok.token_to_id("<eos>") is not None else [1]
    anchors = [] if args.no_anchors else [a for a in ("llguidance", "xgrammar") if anchor_available(a)]
    missing = [] if args.no_anchors else [a for a in ("llguidance", "xgrammar") if a not in anchors]
    root = Path(args.root)
    splits = args.splits or sorted(p.name for p in root.iterdir() if p.is_dir())
    print(f"tokenizer {TOKENIZER.name} V={len(vocab)}; anchors: {anchors or 'none'}"
          + (f" (not installed: {missing})" if missing else ""), flush=True)
    rows, sink = [], open(args.jsonl, "w") if args.jsonl else None
    for split in splits:
        files = sample_files(root / split, args.per_split)
        texts = [f.read_text() for f in files]
        t0 = time.perf_counter()
        results = list(
            check_many(
                [json.loads(t) for t in texts],
                vocab,
                eos,
                timeout=args.timeout,
                memory_bytes=4 << 30,
                max_new_tokens=args.max_new_tokens,
                canvas_length=32,
                seed=0,
                walks=args.walks,
            )
        )
        row = {"split": split, **summarise(results, args.timeout), "wall_s": time.perf_counter() - t0}
        verdicts = {a: run_anchor(a, texts, args.timeout) for a in anchors}
        for a, v in verdicts.items():
            row[a] = sum(not e for e in v)
        rows.append(row)
        for f, res, *av in zip(files, results, *verdicts.values()):
            if res.get("error", "").startswith(("INVALID", "CRASH")):
                print(f"  {split}/{f.name}: {res['error'][:300]}", flush=True)
            if sink:
                rec = {"split": split, "file": f.name, **res, **dict(zip(anchors, av))}
                sink.write(json.dumps(rec) + "\n")
        print(format_row(row, anchors), flush=True)
    table = markdown(rows, anchors, args)
    print("\n" + table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0 if all(r["invalid"] == 0 for r in rows) else 1


def _pct(a: int, n: int) -> str:
    return f"{100 * a / n:.0f}% ({a}/{n})" if n else "-"


def format_row(r: dict, anchors: list[str]) -> str:
    anc = " ".join(f"{a}={_pct(r[a], r['n'])}" for a in anchors)
    why = "; ".join(f"{c}x {w}" for w, c in r["reasons"])
    return (
        f"{r['split']}: compiled {_pct(r['compiled'], r['n'])} valid {_pct(r['valid'], r['n'])} "
        f"invalid {r['invalid']} compile p50/p95/max {r['p50']:.2f}/{r['p95']:.2f}/{r['max']:.1f}s "
        f"{anc} [{r['wall_s']:.0f}s]  top refusals: {why}"
    )


def markdown(rows: list[dict], anchors: list[str], args) -> str:
    head = ["split", "n", "compiled", "compiled+valid", "invalid", "compile p50 / p95 / max (s)", *anchors]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["split"],
            str(r["n"]),
            _pct(r["compiled"], r["n"]),
            _pct(r["valid"], r["n"]),
            str(r["invalid"]),
            f"{r['p50']:.2f} / {r['p95']:.2f} / {r['max']:.1f}",
            *[_pct(r[a], r["n"]) for a in anchors],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Top refusal reasons per split (timeout {args.timeout:.0f} s, walks {args.walks}):")
    for r in rows:
        lines.append(f"- {r['split']}: " + ("; ".join(f"{c}x {w}" for w, c in r["reasons"]) or "none"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
