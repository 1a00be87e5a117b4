"""Solved fraction (every cell right, clues kept, all groups valid), the solving loop used to measure it
(the engine's reference loop, `engine.generate`: clues in the prompt, optionally also pinned in the canvas)
and the training monitor (prompt-only, held-out puzzles, at a given number of denoising steps)."""

from __future__ import annotations

import torch

from engine.generate import generate
from engine.params import GenerationParams, until_stop
from engine.pins import Pins
from model.tokenizer import encode_prompt, left_pad
from pipeline.pin_templates import template_pins
from sudoku.grid import PINNED_PROMPT, canvas_text, check_solution, prompt


def solved_fraction(outputs: list[str], puzzles: list[str]) -> float:
    """Fraction of outputs that `check_solution` accepts for their puzzle (same order, same length)."""
    if len(outputs) != len(puzzles):
        raise ValueError(f"solved_fraction: {len(outputs)} outputs for {len(puzzles)} puzzles")
    if not puzzles:
        raise ValueError("solved_fraction: no puzzles")
    return sum(check_solution(p, o) is None for o, p in zip(outputs, puzzles)) / len(puzzles)


def clue_pins(tok, puzzle: str, stop_id: int) -> Pins:
    """The engine pins of pinned mode, as a job's `generation.pins` (form grid) makes them from the
    puzzle's canvas text: every marker and clue digit at its canvas offset, then the stop token."""
    encode = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    return template_pins("grid", canvas_text(puzzle), encode, stop_id).pins


@torch.no_grad()
def solve_texts(model, tok, puzzles: list[str], steps: int, seed: int = 0, batch: int = 50,
                pin_clues: bool = False) -> list[str]:
    """The model's answer text for each puzzle (engine reference loop, the checkpoint's sampler settings at
    `steps` denoising steps, one canvas): clues in the prompt (sudoku/grid.py `prompt`), or with pin_clues
    pinned on the canvas under the short `PINNED_PROMPT`.
    Batch i is seeded seed + i."""
    stops = GenerationParams.from_model(model).eos_token_ids
    pad = model.config.text.pad_token_id
    texts = []
    for i in range(0, len(puzzles), batch):
        part = puzzles[i:i + batch]
        texts_in = [PINNED_PROMPT if pin_clues else prompt(p) for p in part]
        ids_BL, valid_BL = left_pad([encode_prompt(tok, t) for t in texts_in], pad)
        pins = [clue_pins(tok, p, stops[0]) for p in part] if pin_clues else None
        out_BT = generate(model, ids_BL, valid_BL.long(), mode="reference", seed=seed + i // batch,
                          max_new_tokens=model.config.canvas_length, max_denoising_steps=steps, pins=pins)
        for row in out_BT[:, ids_BL.shape[1]:].tolist():
            texts.append(tok.decode(until_stop(row, stops), skip_special_tokens=True))
    return texts


def monitor(model, tok, rows: list[dict], steps: int, seed: int = 0,
            pin_clues: bool = True) -> dict[str, float]:
    """Solved fraction on held-out rows ({"puzzle", "clues", ...}) overall and on the hard subset (<= 25
    clues), with the global RNG restored afterwards so a training run's randomness does not depend on it."""
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        texts = solve_texts(model, tok, [r["puzzle"] for r in rows], steps, seed, pin_clues=pin_clues)
    ok = [check_solution(r["puzzle"], t) is None for r, t in zip(rows, texts)]
    hard = [o for o, r in zip(ok, rows) if r["clues"] <= 25]
    return {"solved": round(sum(ok) / len(ok), 4), "hard_solved": round(sum(hard) / max(1, len(hard)), 4),
            "n": len(ok), "n_hard": len(hard)}


def main(argv: list[str] | None = None) -> int:
    """`python -m sudoku.metrics --model model/assets/dgbatch-sudoku --n 1000 --steps 12,48`: held-out solved
    fraction (overall, hard subset, per clue band) as JSON lines, one per step count."""
    import argparse
    import json
    import time

    from model import DiffusionGemma, load_tokenizer
    from train.sudoku_data import load_heldout

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="an exported model dir")
    ap.add_argument("--n", type=int, default=100, help="first n held-out puzzles")
    ap.add_argument("--steps", default="12,48", help="comma-separated denoising step counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pinned", action="store_true", help="also pin the clues in the canvas (engine pins)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = DiffusionGemma.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = load_tokenizer(args.model)
    rows = load_heldout()[:args.n]
    for steps in (int(s) for s in args.steps.split(",")):
        t0 = time.time()
        texts = solve_texts(model, tok, [r["puzzle"] for r in rows], steps, args.seed, pin_clues=args.pinned)
        ok = [check_solution(r["puzzle"], t) is None for r, t in zip(rows, texts)]
        bands = {}
        for lo, hi in ((22, 25), (26, 30), (31, 35), (36, 40)):
            sel = [o for o, r in zip(ok, rows) if lo <= r["clues"] <= hi]
            bands[f"{lo}-{hi}"] = round(sum(sel) / max(1, len(sel)), 4)
        print(json.dumps({"steps": steps, "pinned": args.pinned, "n": len(rows),
                          "solved": round(sum(ok) / len(ok), 4),
                          "hard_solved": bands["22-25"], "by_clues": bands,
                          "seconds": round(time.time() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
