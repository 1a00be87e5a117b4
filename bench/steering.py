"""Steering options of structured output (constraints/steering.py), measured on a trained model (issue 5).

For each task family (train/synthdata.py held-out split, the family's JSON Schema) and each step count, with
the ConstraintHook's steering options off, each alone, and combined (constraints/steering.py):
exact match (whole object), per-field accuracy, validity (parses and validates; always 100% under the DP),
validity-before-commit (share of rows whose raw argmax at every commit already was the valid path, i.e. the
DP changed nothing), tokens per forward (non-pad new tokens / live decoder row-forwards, as in
train/evaluate.py),
decoder forwards per row and wall seconds. Generation: reference mode (`engine.generate`, lockstep batch, one
seed per batch: train/evaluate.py's setting, so the "off" rows equal its constrained rows) or the fast engine.
Option sets are explicit ("off" is commit-only), whatever the hook's default (SteeringOptions.kept()).

    OMP_NUM_THREADS=1 .venv/bin/python bench/steering.py --model model/assets/dgbatch-small --n 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from constraints.steering import SteeringOptions  # noqa: E402
from train import synthdata  # noqa: E402
from train.evaluate import FAMILY_CANVASES, constraint_hook, decode_answer, score, stop_ids  # noqa: E402
from train.forward import make_batch  # noqa: E402

DEFAULT_OPTIONS = "off;constrained_stop;valid_sampling;seed_canvas;all"


class _Recording:
    """Reference mode returns no hook states: this wrapper keeps every commit's new state (rows commit in
    batch order, once per canvas) and passes everything else, steering included, to the hook."""

    def __init__(self, hook):
        self.hook = hook
        self.log: list = []

    def __getattr__(self, name):
        return getattr(self.hook, name)

    def initial_state(self):
        return self.hook.initial_state()

    def commit(self, logits_CV, state, *, tokens_left, last_canvas):
        out = self.hook.commit(logits_CV, state, tokens_left=tokens_left, last_canvas=last_canvas)
        self.log.append(out[1])
        return out

    def final_states(self, B: int) -> list:
        return self.log[-B:]


def _prompts(tok, exs, config, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded chat prompts [B, L] and their valid mask. make_batch appends its end id to answers only,
    and there are none here: the checkpoint's first EOS id stands in."""
    b = make_batch(tok, [e.prompt for e in exs], None, config.canvas_length, config.eos_token_ids[0], pad_id)
    return b.prompt_BL, b.prompt_valid_BL


def run_config(
    model,
    tok,
    base_hook,
    family: str,
    n: int,
    steps: int,
    opts: SteeringOptions,
    mode: str,
    batch: int,
    seed: int = 0,
) -> dict:
    from engine.counters import Counters
    from engine.generate import generate

    exs = synthdata.dataset("heldout", n, family)
    C = model.config.canvas_length
    max_new = FAMILY_CANVASES[family] * C
    hook = base_hook.with_options(opts, track_argmax=True)
    pad = hook.pad_token_id  # the model config's pad id (build_hook reads it there)
    texts, states, new_tokens, forwards, t0 = [], [], 0, 0, time.time()
    for i in range(0, n, batch):
        chunk = exs[i : i + batch]
        ids, valid = _prompts(tok, chunk, model.config, pad)
        if mode == "reference":
            rec, counters = _Recording(hook), Counters()
            out = generate(
                model,
                ids,
                valid.long(),
                mode="reference",
                seed=seed + i,
                max_new_tokens=max_new,
                max_denoising_steps=steps,
                commit_hook=rec,
                counters=counters,
            )
            rows = out[:, ids.shape[1] :].tolist()
            states += rec.final_states(len(chunk))
            forwards += counters.live_forwards
        else:
            from engine.fast import Engine, Request
            from engine.params import GenerationParams

            params = GenerationParams.from_model(model, max_new_tokens=max_new, max_denoising_steps=steps)
            reqs = [
                Request(
                    id=str(j),
                    input_ids=ids[j][valid[j]].tolist(),
                    seed=seed + i + j,
                    params=params,
                    commit_hook=hook,
                )
                for j in range(len(chunk))
            ]
            comps = Engine(model, max_batch_rows=batch).generate(reqs)
            rows = [c.canvas_tokens for c in comps]
            states += [c.hook_state for c in comps]
            forwards += sum(c.denoising_steps for c in comps)
        for row in rows:
            new_tokens += sum(t != pad for t in row)
            texts.append(decode_answer(tok, row, stop_ids(model)))
    res = score(exs, texts)
    res["valid_before_commit"] = sum(bool(s is not None and s.argmax_valid) for s in states) / n
    res["tokens_per_forward"] = new_tokens / max(1, forwards)
    res["forwards_per_row"] = forwards / n
    res["seconds"] = round(time.time() - t0, 1)
    return res


def label(opts: SteeringOptions) -> str:
    on = [k for k in ("constrained_stop", "valid_sampling", "seed_canvas") if getattr(opts, k)]
    return " + ".join(on) if on else "off"


def markdown(results: list[dict]) -> str:
    lines = [
        "| family | steps | steering | exact | per-field accuracy | valid | valid before commit "
        "| tokens/forward | forwards/row | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        fields = ", ".join(f"{k} {v:.0%}" for k, v in r["fields"].items())
        lines.append(
            f"| {r['family']} | {r['steps']} | {r['steering']} | {r['exact']:.0%} | {fields} | "
            f"{r['valid']:.0%} | {r['valid_before_commit']:.0%} | {r['tokens_per_forward']:.2f} | "
            f"{r['forwards_per_row']:.1f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model directory (HF layout)")
    ap.add_argument("--n", type=int, default=50, help="held-out examples per family")
    ap.add_argument("--steps", default="48,12")
    ap.add_argument("--families", default=",".join(synthdata.FAMILIES))
    ap.add_argument(
        "--options",
        default=DEFAULT_OPTIONS,
        help="';'-separated option sets, each 'off', 'all' or a comma list of option names",
    )
    ap.add_argument("--mode", choices=("reference", "fast"), default="reference")
    ap.add_argument("--batch", type=int, default=50, help="rows per generate call / engine batch")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON results here (+ .md table)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from model import DiffusionGemma, load_tokenizer

    option_sets = [SteeringOptions.parse(s) for s in args.options.split(";")]
    model = DiffusionGemma.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = load_tokenizer(args.model)
    results, t0 = [], time.time()
    for fam in args.families.split(","):
        base = constraint_hook(fam, tok, model, FAMILY_CANVASES[fam] * model.config.canvas_length)
        for steps in (int(s) for s in args.steps.split(",")):
            for opts in option_sets:
                r = run_config(model, tok, base, fam, args.n, steps, opts, args.mode, args.batch)
                r.update(family=fam, steps=steps, steering=label(opts), mode=args.mode)
                results.append(r)
                print(json.dumps(r), flush=True)
    table = markdown(results)
    print(table)
    print(f"total {time.time() - t0:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "n": args.n, "results": results}, indent=2))
        args.out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
