"""Sudoku solver and seeded generator of unique-solution puzzles.

Solver: bitmask backtracking with the minimum-remaining-values rule (branch on the empty cell with the
fewest candidates), counting solutions up to a limit (2 is enough to prove uniqueness). Generator: fill an
empty grid by randomised backtracking, then remove cells in random order, undoing any removal that makes the
solution non-unique, until the target clue count is reached or no cell can be removed (a minimal puzzle).
Everything is a pure function of its seed (`random.Random(seed)`), so sets are reproducible.
"""

from __future__ import annotations

import random

from sudoku.grid import BOX, COL, ROW, to_string

FULL = 0x3FE  # bits 1..9
_BIT = [1 << d for d in range(10)]
# popcount and single-bit -> digit tables for 10-bit masks
_POP = [bin(m).count("1") for m in range(1024)]
_DIGITS_OF = [[d for d in range(1, 10) if m >> d & 1] for m in range(1024)]


def count_solutions(grid: list[int], limit: int = 2, rng: random.Random | None = None,
                    out: list[int] | None = None) -> int:
    """Number of solutions of `grid` (81 ints, 0 = empty), counting up to `limit`. With `out`, the first
    solution found is written there; with `rng`, candidates are tried in random order (the filler)."""
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    g = list(grid)
    empty = []
    for i, v in enumerate(g):
        if v:
            b = _BIT[v]
            if rows[ROW[i]] & b or cols[COL[i]] & b or boxes[BOX[i]] & b:
                return 0
            rows[ROW[i]] |= b
            cols[COL[i]] |= b
            boxes[BOX[i]] |= b
        else:
            empty.append(i)
    found = 0

    def search() -> None:
        nonlocal found
        # MRV: the empty cell with the fewest candidates
        best, best_n, best_m = -1, 10, 0
        for i in empty:
            if g[i]:
                continue
            m = FULL & ~(rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]])
            n = _POP[m]
            if n < best_n:
                best, best_n, best_m = i, n, m
                if n <= 1:
                    break
        if best < 0:
            found += 1
            if out is not None and found == 1:
                out[:] = g
            return
        if best_n == 0:
            return
        r, c, b = ROW[best], COL[best], BOX[best]
        cands = _DIGITS_OF[best_m]
        if rng is not None:
            cands = cands[:]
            rng.shuffle(cands)
        for d in cands:
            bit = _BIT[d]
            g[best] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            search()
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            g[best] = 0
            if found >= limit:
                return

    search()
    return found


def solve(grid: list[int]) -> list[int] | None:
    """One solution (81 ints) or None when there is none."""
    out: list[int] = []
    return out if count_solutions(grid, 1, out=out) else None


def random_full_grid(rng: random.Random) -> list[int]:
    """A uniformly-shuffled valid complete grid from randomised backtracking on the empty grid."""
    out: list[int] = []
    count_solutions([0] * 81, 1, rng=rng, out=out)
    return out


def make_puzzle(rng: random.Random, target_clues: int = 17) -> tuple[list[int], list[int]]:
    """(puzzle, solution): a random full grid with cells removed in random order while the solution stays
    unique, stopping at `target_clues` clues or when no cell can be removed (then above the target)."""
    solution = random_full_grid(rng)
    puzzle = solution[:]
    order = list(range(81))
    rng.shuffle(order)
    clues = 81
    for i in order:
        if clues <= target_clues:
            break
        v = puzzle[i]
        puzzle[i] = 0
        if count_solutions(puzzle, 2) != 1:
            puzzle[i] = v  # removing it admits a second solution: keep the clue
        else:
            clues -= 1
    return puzzle, solution


def make_set(n: int, seed: int, clues: tuple[int, int] = (22, 40), max_tries: int = 200) -> list[dict]:
    """n puzzles as rows {"puzzle", "solution", "clues"}; puzzle i targets clue count lo + i % (hi-lo+1)
    (a stratified uniform distribution over [lo, hi]) and is retried with fresh randomness until its clue
    count is exactly the target (low targets need a lucky removal order). Seeded: same args, same rows."""
    lo, hi = clues
    if not 17 <= lo <= hi <= 80:
        raise ValueError(f"clues range must satisfy 17 <= lo <= hi <= 80, got {clues}")
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        target = lo + i % (hi - lo + 1)
        for _ in range(max_tries):
            puzzle, solution = make_puzzle(rng, target)
            if sum(1 for v in puzzle if v) == target:
                break
        else:
            raise RuntimeError(f"make_set: no puzzle with {target} clues in {max_tries} tries (seed {seed})")
        rows.append({"puzzle": to_string(puzzle), "solution": to_string(solution), "clues": target})
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Write a seeded set of unique-solution Sudoku puzzles as JSONL.")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=2700)
    ap.add_argument("--clues", type=lambda s: tuple(int(x) for x in s.split(",")), default=(22, 40),
                    help="lo,hi clue counts (stratified uniform); default %(default)s")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rows = make_set(args.n, args.seed, args.clues)
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {len(rows)} puzzles to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
