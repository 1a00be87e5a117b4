"""Sudoku solved % on the held-out set (sudoku/data/heldout.jsonl) at 48 / 24 / 12 / 6 denoising steps, one
model (model/assets/dgbatch-sudoku), six ways through the fast engine's one loop (engine/fast.py) and one
without the model:

- `pinned`: the clues pinned on the canvas with the cell markers (sudoku/grid.py `canvas_text` as the `grid`
  template of pipeline/pin_templates.py, as a job with `generation.pins` runs it), the short prompt,
  confidence-ordered commits;
- `prompt`: the clues in the prompt only (the same canvas text), the whole canvas denoised from noise;
- `pinned_l2r`: pinned, but commits strictly left to right (engine/params.py `commit_order`), the same number
  of positions per step as an autoregressive order would take: the bidirectional advantage, same weights;
- `pinned_valid`: pinned, the output held to a digit 1-9 after each marker (sudoku/grid.py `CANVAS_REGEX`,
  constraints/hook.py with the pins), and the all-different validator (sudoku/grid.py `validate`) with up to 3
  regenerations from derived seeds (pipeline/validators.py `Validator.generate`);
- `pinned_groups`: pinned and held to digits as `pinned_valid`, and the rows, columns and boxes held
  all-different at every step and at the commit (constraints/all_different.py over sudoku/grid.py
  `CANVAS_GROUPS`), no validator;
- `groups_valid`: the recipe of jobs/examples/sudoku.yaml: `pinned_groups` and the validator with up to 3
  regenerations;
- `groups_only`: no model: the all-different rule of `pinned_groups` alone, over logits that say nothing
  (tiny noise drawn from the row's seed: it only breaks ties), so that `pinned_groups` minus this is what the
  model adds to the rule;
- `groups_only_valid`: the same with the validator's 3 regenerations (each a new seed, so new tie-breaks):
  the baseline of `groups_valid`.

Solved means every cell right (sudoku/grid.py `check_solution`). Prints one JSON line per (steps, way):
solved % overall and on the hard subset (<= 25 clues), the counts behind them, forwards and wall time; then
the ratios the issue asks about. Run: `OMP_NUM_THREADS=1 python bench/sudoku.py [--n 1000] [--steps
48,24,12,6] [--ways pinned,prompt,pinned_l2r,pinned_valid,pinned_groups,groups_valid,groups_only,...]`.
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

from constraints import build_hook, decode_text  # noqa: E402
from constraints.all_different import AllDifferent, AllDifferentSpec  # noqa: E402
from engine import pins as pinning  # noqa: E402
from engine.fast import Engine, Request  # noqa: E402
from engine.params import GenerationParams  # noqa: E402
from model import DiffusionGemma, load_tokenizer  # noqa: E402
from model.tokenizer import encode_prompt  # noqa: E402
from pipeline.outputs import RowResult  # noqa: E402
from pipeline.rows import PreparedRow  # noqa: E402
from pipeline.validators import Validator  # noqa: E402
from sudoku.grid import CANVAS_GROUPS, CANVAS_REGEX, DIGITS, PINNED_PROMPT, check_solution, prompt  # noqa: E402
from sudoku.metrics import clue_pins  # noqa: E402

WAYS = ("pinned", "prompt", "pinned_l2r", "pinned_valid", "pinned_groups", "groups_valid", "groups_only",
        "groups_only_valid")
# each no-model way -> the way with the model it is the baseline of
NO_MODEL = {"groups_only": "pinned_groups", "groups_only_valid": "groups_valid"}
DIGIT_WAYS = ("pinned_valid", "pinned_groups", "groups_valid")  # the output held to digits (decode_text)
GROUP_WAYS = ("pinned_groups", "groups_valid")
VALIDATED = ("pinned_valid", "groups_valid", "groups_only_valid")
HARD = 25


def load_rows(path: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:n]


class Solver:
    """The model behind the engine: puzzles in, answer texts out, one way and step count per call."""

    def __init__(self, model_dir: str, batch: int):
        self.model = DiffusionGemma.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.tok = load_tokenizer(model_dir)
        self.base = GenerationParams.from_model(self.model)
        self.batch = batch
        self.forwards = 0
        self.digits = build_hook({"regex": CANVAS_REGEX}, self.tok, self.model.config,
                                 max_new_tokens=self.base.max_new_tokens)
        self.groups = AllDifferentSpec(CANVAS_GROUPS, tuple(self.tok.token_to_id(d) for d in DIGITS))

    def hook(self, way: str, pins, max_new_tokens: int):
        """The row's commit hook for this way (None: the loop's argmax)."""
        if way not in DIGIT_WAYS:
            return None
        hook = self.digits.with_pins(pins, max_new_tokens)
        if way in GROUP_WAYS:
            hook = AllDifferent(self.groups, max_new_tokens=max_new_tokens, inner=hook,
                                pins_tokens=pins.tokens)
        return hook

    def no_model(self, puzzles: list[str], seeds: list[int]) -> list[str]:
        """The no-model ways: the all-different commit over logits that say nothing (N(0, 0.01^2) noise from
        each row's seed), no decoder forward."""
        stop = self.base.eos_token_ids[0]
        n, V = self.base.max_new_tokens, self.model.config.text.vocab_size
        texts = []
        for p, seed in zip(puzzles, seeds):
            pins = clue_pins(self.tok, p, stop)
            hook = self.hook("pinned_groups", pins, n)
            noise_CV = 0.01 * torch.randn(n, V, generator=torch.Generator().manual_seed(seed))
            logits_CV = pinning.mask_logits(noise_CV, pins.canvas(0, n))
            toks, _, _ = hook.commit(logits_CV, hook.initial_state(), tokens_left=n, last_canvas=True)
            texts.append(decode_text(self.digits, [int(t) for t in toks]))
        return texts

    def texts(self, puzzles: list[str], seeds: list[int], steps: int, way: str) -> list[str]:
        if way in NO_MODEL:
            return self.no_model(puzzles, seeds)
        order = "left_to_right" if way == "pinned_l2r" else "confidence"
        params = self.base.with_(max_denoising_steps=steps, commit_order=order)
        reqs = []
        for i, (p, seed) in enumerate(zip(puzzles, seeds)):
            pins = None if way == "prompt" else clue_pins(self.tok, p, params.eos_token_ids[0])
            hook = self.hook(way, pins, params.max_new_tokens)
            text = prompt(p) if way == "prompt" else PINNED_PROMPT
            reqs.append(Request(id=str(i), input_ids=encode_prompt(self.tok, text), seed=seed,
                                params=params, pins=pins, commit_hook=hook))
        eng = Engine(self.model, max_batch_rows=self.batch)
        done = eng.generate(reqs)
        self.forwards += eng.counters.decoder_forwards
        bad = [c.error for c in done if c.finish_reason == "error"]
        if bad:
            raise RuntimeError(f"engine refused a puzzle: {bad[0]}")
        if way in DIGIT_WAYS:
            return [decode_text(self.digits, c.token_ids) for c in done]
        return [self.tok.decode(c.token_ids, skip_special_tokens=True) for c in done]


def run_way(solver: Solver, rows: list[dict], steps: int, way: str) -> dict:
    puzzles = [r["puzzle"] for r in rows]
    seeds = [1000 + i for i in range(len(rows))]
    t0, f0 = time.perf_counter(), solver.forwards
    generations = [1] * len(rows)
    if way in VALIDATED:
        validator = Validator("sudoku.grid:validate", max_regenerations=3)

        def generate(prepared: list[PreparedRow]) -> list[RowResult]:
            texts = solver.texts([r.prompt for r in prepared], [r.seed for r in prepared], steps, way)
            return [RowResult(text=t) for t in texts]

        prepared = [PreparedRow(i, str(i), s, p) for i, (p, s) in enumerate(zip(puzzles, seeds))]
        _, results = validator.generate(generate, prepared, [{"puzzle": p} for p in puzzles])
        texts, generations = [r.text or "" for r in results], [r.generations for r in results]
    else:
        texts = solver.texts(puzzles, seeds, steps, way)
    ok = [check_solution(p, t) is None for p, t in zip(puzzles, texts)]
    hard = [o for o, r in zip(ok, rows) if r["clues"] <= HARD]
    return {"steps": steps, "way": way, "solved_pct": round(100 * sum(ok) / len(ok), 1),
            "hard_solved_pct": round(100 * sum(hard) / max(1, len(hard)), 1), "solved": sum(ok), "n": len(ok),
            "hard_solved": sum(hard), "n_hard": len(hard), "generations": sum(generations),
            "decoder_forwards": solver.forwards - f0, "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "model" / "assets" / "dgbatch-sudoku"))
    ap.add_argument("--data", default=str(ROOT / "sudoku" / "data" / "heldout.jsonl"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", default="48,24,12,6")
    ap.add_argument("--ways", default=",".join(WAYS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    ways = a.ways.split(",")
    unknown = [w for w in ways if w not in WAYS]
    if unknown:
        ap.error(f"unknown way(s) {unknown}; expected some of {', '.join(WAYS)}")
    torch.set_num_threads(a.threads)
    rows = load_rows(Path(a.data), a.n)
    solver = Solver(a.model, a.batch)
    results = {}
    for steps in [int(s) for s in a.steps.split(",")]:
        for way in ways:
            r = run_way(solver, rows, steps, way)
            results[(steps, way)] = r
            print(json.dumps(r), flush=True)
    for steps in sorted({s for s, _ in results}, reverse=True):
        got = {w: results[(steps, w)]["solved_pct"] for w in ways if (steps, w) in results}
        line = [f"{steps:>2} steps: " + "  ".join(f"{w} {v:.1f}%" for w, v in got.items())]
        if "pinned" in got and "prompt" in got and got["prompt"]:
            line.append(f"pinned/prompt {got['pinned'] / got['prompt']:.2f}x")
        if "pinned" in got and "pinned_l2r" in got and got["pinned_l2r"]:
            line.append(f"confidence/left-to-right {got['pinned'] / got['pinned_l2r']:.2f}x")
        for base, w in NO_MODEL.items():  # what the model adds to the all-different rule, in points
            if base in got and w in got:
                line.append(f"{w} - {base} {got[w] - got[base]:+.1f} points")
        print("  ".join(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
