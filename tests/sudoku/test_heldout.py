"""sudoku/data/heldout.jsonl: 1,000 rows, the distribution sudoku/data/README.md states, valid unique
solutions, no duplicates, and the first rows reproduce from the stated command's seed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from sudoku.grid import check_solution, parse
from sudoku.puzzles import count_solutions, make_set

HELDOUT = Path(__file__).resolve().parents[2] / "sudoku" / "data" / "heldout.jsonl"


def _rows() -> list[dict]:
    return [json.loads(line) for line in HELDOUT.read_text().splitlines()]


def test_heldout_size_and_distribution():
    rows = _rows()
    assert len(rows) == 1000
    counts = Counter(r["clues"] for r in rows)
    assert sorted(counts) == list(range(22, 41))
    assert all(counts[k] == 53 for k in range(22, 34)) and all(counts[k] == 52 for k in range(34, 41))
    assert sum(v for k, v in counts.items() if k <= 25) == 212  # the hard subset
    assert len({r["puzzle"] for r in rows}) == 1000


def test_heldout_rows_are_valid_and_unique():
    for n, r in enumerate(_rows(), 1):
        assert set(r) == {"puzzle", "solution", "clues"}, f"row {n}"
        assert sum(c != "0" for c in r["puzzle"]) == r["clues"], f"row {n}"
        assert check_solution(r["puzzle"], r["solution"]) is None, f"row {n}"
        assert count_solutions(parse(r["puzzle"]), 2) == 1, f"row {n}"


def test_heldout_regenerates_from_its_seed():
    assert make_set(19, seed=2700, clues=(22, 40)) == _rows()[:19]
