"""sudoku/puzzles.py: the solver counts solutions, the generator makes unique puzzles, reproducibly."""

from __future__ import annotations

import random

import numpy as np

from sudoku import augment
from sudoku.grid import check_solution, first_conflict, parse, to_string
from sudoku.puzzles import count_solutions, make_puzzle, make_set, random_full_grid, solve

PUZZLE = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def test_solver_solves_and_counts():
    assert to_string(solve(parse(PUZZLE))) == SOLUTION
    assert count_solutions(parse(PUZZLE), 2) == 1
    assert count_solutions([0] * 81, 2) == 2  # the empty grid has many; counting stops at the limit
    assert count_solutions([0] * 81, 5) == 5
    # a solved grid with two clues that contradict each other has none
    broken = parse(SOLUTION)
    broken[1] = 0
    broken[2] = 0
    broken[1] = broken[0]
    assert count_solutions(broken, 2) == 0
    assert solve(broken) is None


def test_two_solution_puzzle_is_detected():
    # remove the four cells of a "deadly pattern" rectangle (a,b / b,a): the grid then has two solutions
    g = parse(SOLUTION)
    for r1 in range(9):
        for r2 in range(r1 + 1, 9):
            for c1 in range(9):
                for c2 in range(c1 + 1, 9):
                    a, b = g[r1 * 9 + c1], g[r1 * 9 + c2]
                    two_boxes = (r1 // 3 == r2 // 3) != (c1 // 3 == c2 // 3)  # the 4 cells lie in 2 boxes
                    if (g[r2 * 9 + c1], g[r2 * 9 + c2]) == (b, a) and two_boxes:
                        h = g[:]
                        for i in (r1 * 9 + c1, r1 * 9 + c2, r2 * 9 + c1, r2 * 9 + c2):
                            h[i] = 0
                        assert count_solutions(h, 2) == 2
                        return
    raise AssertionError("no deadly rectangle in the test grid")


def test_full_grids_are_valid_and_seeded():
    g = random_full_grid(random.Random(3))
    assert 0 not in g and first_conflict(g) is None
    assert g == random_full_grid(random.Random(3))
    assert g != random_full_grid(random.Random(4))


def test_generated_puzzles_have_exactly_one_solution():
    rng = random.Random(11)
    for target in (22, 25, 30, 40, 17):
        puzzle, solution = make_puzzle(rng, target)
        clues = sum(1 for v in puzzle if v)
        assert clues >= target
        assert count_solutions(puzzle, 2) == 1
        assert check_solution(to_string(puzzle), to_string(solution)) is None
        if clues > target:  # stopped early: a minimal puzzle (no clue can go)
            for i in range(81):
                if puzzle[i]:
                    h = puzzle[:]
                    h[i] = 0
                    assert count_solutions(h, 2) == 2


def test_make_set_hits_targets_and_is_reproducible():
    rows = make_set(12, seed=5, clues=(24, 29))
    assert [r["clues"] for r in rows] == [24, 25, 26, 27, 28, 29] * 2
    for r in rows:
        assert sum(c != "0" for c in r["puzzle"]) == r["clues"]
        assert count_solutions(parse(r["puzzle"]), 2) == 1
        assert check_solution(r["puzzle"], r["solution"]) is None
    assert make_set(12, seed=5, clues=(24, 29)) == rows
    assert make_set(12, seed=6, clues=(24, 29)) != rows


def test_make_set_rejects_bad_range():
    import pytest

    with pytest.raises(ValueError, match="clues range"):
        make_set(1, 0, clues=(16, 30))
    with pytest.raises(ValueError, match="clues range"):
        make_set(1, 0, clues=(30, 20))


def test_symmetries_keep_puzzles_valid_and_unique():
    rng = np.random.default_rng(0)
    p, s = np.array(parse(PUZZLE)), np.array(parse(SOLUTION))
    seen = set()
    for _ in range(20):
        sym = augment.random_symmetry(rng)
        P, S = augment.apply(p, sym).tolist(), augment.apply(s, sym).tolist()
        assert sum(1 for v in P if v) == sum(1 for v in p if v)
        assert check_solution(to_string(P), to_string(S)) is None
        assert count_solutions(P, 2) == 1
        seen.add(to_string(P))
    assert len(seen) == 20
