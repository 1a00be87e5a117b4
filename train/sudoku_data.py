"""The Sudoku training stream: a seeded pool of minimal unique-solution puzzles, and batch `step` as a pure
function of (pool, seed, step) so a resumed run continues exactly.

Each row: a pool puzzle under a random symmetry (sudoku/augment.py), with extra clues put back from its
solution so the clue count is uniform in [the puzzle's own count, max_clues] (a superset of a unique puzzle's
clues stays unique). The target is the solution's canvas text (sudoku/grid.py `canvas_text`: each digit after
its cell's marker). With probability `pin_frac` a batch is pinned: the short prompt, and the markers, clues
and stop token pinned in the canvas (clean, never corrupted, no loss: the engine's pinned mode, as a job's
`generation.pins` makes it); otherwise the puzzle's canvas text is in the prompt and the whole canvas is
noised. Rows equal to a held-out puzzle (sudoku/data/heldout.jsonl) are redrawn; the pool uses
seeds disjoint from the held-out set's.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from sudoku import augment
from sudoku.grid import PINNED_PROMPT, canvas_text, prompt, to_string
from sudoku.puzzles import make_puzzle
from train.forward import Batch, make_batch

END_OF_TURN, PAD = 106, 0
HELDOUT = Path(__file__).resolve().parents[1] / "sudoku" / "data" / "heldout.jsonl"
HELDOUT_SEED = 2700  # sudoku/data/README.md; training pools must use another seed


def load_heldout(path: Path = HELDOUT) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e})") from None
    return rows


def build_pool(n: int, seed: int, cache: Path | None = None) -> np.ndarray:
    """n minimal puzzles and their solutions as int8 [n, 2, 81] (0 = empty), from random.Random(seed);
    cached as JSONL at `cache` (reused when its header names the same n and seed)."""
    if seed == HELDOUT_SEED:
        raise ValueError(f"pool seed {seed} is the held-out set's seed; pick another")
    if cache is not None and cache.exists():
        lines = cache.read_text().splitlines()
        head = json.loads(lines[0])
        if head == {"n": n, "seed": seed} and len(lines) == n + 1:
            rows = [json.loads(x) for x in lines[1:]]
            return np.array([[[int(c) for c in r["puzzle"]], [int(c) for c in r["solution"]]] for r in rows],
                            dtype=np.int8)
    rng = random.Random(seed)
    t0 = time.time()
    pairs = [make_puzzle(rng, 17) for _ in range(n)]  # target 17: remove until minimal
    pool = np.array([[p, s] for p, s in pairs], dtype=np.int8)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "w") as f:
            f.write(json.dumps({"n": n, "seed": seed}) + "\n")
            for p, s in pairs:
                f.write(json.dumps({"puzzle": to_string(p), "solution": to_string(s)}) + "\n")
    print(f"sudoku pool: {n} minimal puzzles in {time.time() - t0:.0f}s "
          f"(clues mean {float((pool[:, 0] > 0).sum(1).mean()):.1f})", flush=True)
    return pool


def sample_rows(pool: np.ndarray, seed: int, step: int, batch_size: int, max_clues: int, pin_frac: float,
                exclude: set[str]) -> list[tuple[str, str, bool]]:
    """Batch `step`'s rows as (puzzle, solution, pinned) strings/flags; a pure function of the arguments.
    A batch is all pinned or all prompt-only (drawn with pin_frac), so its prompts pad to one length."""
    rng = np.random.default_rng([seed, step])
    pinned = bool(rng.random() < pin_frac)
    rows = []
    while len(rows) < batch_size:
        p_81, s_81 = pool[rng.integers(len(pool))].astype(np.int64)
        sym = augment.random_symmetry(rng)
        p_81, s_81 = augment.apply(p_81, sym), augment.apply(s_81, sym)
        have = int((p_81 > 0).sum())
        target = int(rng.integers(have, max(have, max_clues) + 1))
        empty = np.flatnonzero(p_81 == 0)
        add = rng.permutation(empty)[:target - have]
        p_81[add] = s_81[add]
        puzzle = "".join(map(str, p_81.tolist()))
        if puzzle in exclude:
            continue  # never train on a held-out puzzle
        rows.append((puzzle, "".join(map(str, s_81.tolist())), pinned))
    return rows


def build_batch(rows: list[tuple[str, str, bool]], tok, canvas: int) -> tuple[Batch, torch.Tensor]:
    """(Batch, pinned_BKC): targets the solution's canvas text (sudoku/grid.py `canvas_text`: marker, digit,
    ... every character one token) then <turn|>. A pinned row has the short prompt and its canvas pins
    exactly what the `grid` template of `canvas_text(puzzle)` pins: markers, clues and the stop token; a
    prompt-only row has the puzzle's canvas text in its prompt and nothing pinned."""
    b = make_batch(tok, [PINNED_PROMPT if pin else prompt(p) for p, _, pin in rows],
                   [canvas_text(s) for _, s, _ in rows], canvas, END_OF_TURN, PAD, n_canvases=1)
    pinned = torch.zeros_like(b.targets_BKC, dtype=torch.bool)
    for i, (p, _, pin) in enumerate(rows):
        if pin:
            marks = [k % 2 == 0 or k == 162 or p[k // 2] != "0" for k in range(163)]  # markers, clues, stop
            pinned[i, 0, :163] = torch.tensor(marks)
    return b, pinned
