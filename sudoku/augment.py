"""Sudoku symmetries: relabel digits, permute rows within a band, bands, columns within a stack, stacks, and
transpose. Each maps a valid (puzzle, solution) pair to another valid pair with the same clue count and a
still-unique solution, so a small pool of generated puzzles yields a practically endless training stream
(9! * 6^8 * 2, about 1.2e12 variants of each)."""

from __future__ import annotations

import numpy as np


def random_symmetry(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(cell_map_81, digit_map_10): new grid = digit_map[old grid[cell_map]]; digit_map[0] = 0 keeps empty
    cells empty."""
    bands = rng.permutation(3)
    rows = np.concatenate([3 * b + rng.permutation(3) for b in bands])
    stacks = rng.permutation(3)
    cols = np.concatenate([3 * s + rng.permutation(3) for s in stacks])
    cell = (rows[:, None] * 9 + cols[None, :])
    if rng.random() < 0.5:
        cell = cell.T
    digit = np.concatenate([[0], 1 + rng.permutation(9)])
    return cell.reshape(81), digit


def apply(grid_81: np.ndarray, sym: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The grid (81 ints, 0 = empty) under a symmetry from `random_symmetry`."""
    cell, digit = sym
    return digit[np.asarray(grid_81)[cell]]
