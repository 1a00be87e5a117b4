"""Sudoku: grids and checks (grid.py), a solver and seeded unique-solution generator (puzzles.py), the
held-out set (data/heldout.jsonl) and the solved-fraction metric / training monitor (metrics.py)."""
