"""The README's second example end to end: jobs/examples/sudoku.yaml solves its puzzles through the
pipeline (Ray, pins written by `pins.map` in the model's canvas layout, the regex, the all-different groups
held at every step, the validator with regenerations) on the shipped Sudoku model, `.` puzzles included;
every row is a valid solution of its own puzzle with its clues in place, or an `invalid` row with the
validator's message after 3 regenerations."""

from __future__ import annotations

from pathlib import Path

from pipeline import read_results
from pipeline.executor import run_job
from pipeline.spec import JobSpec
from sudoku.grid import MARKERS, check_solution

ROOT = Path(__file__).resolve().parents[2]


def test_the_sudoku_example_runs_end_to_end(tmp_path, ray_local):
    job = JobSpec.load(ROOT / "jobs" / "examples" / "sudoku.yaml").model_dump(mode="json")
    job["input"]["path"] = str(ROOT / job["input"]["path"])
    job["model"]["path"] = str(ROOT / job["model"]["path"])
    job["output"]["path"] = str(tmp_path / "out")
    m = run_job(job, progress=False)
    rows = read_results(str(tmp_path / "out")).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(set(r["id"] for r in rows)) and len(rows) == 6
    assert m["rows"] == 6
    for r in rows:
        assert 1 <= r["generations"] <= 4
        if r["status"] == "ok":
            assert check_solution(r["puzzle"], r["text"]) is None, r
        else:  # out of regenerations: the validator's last message, never a broken clue or non-digit
            assert r["status"] == "invalid" and r["generations"] == 4 and "validator" in r["error"], r
            assert r["text"][0::2] == MARKERS and r["text"][1::2].isdigit(), r  # markers, then digits
            assert all(p in ".0" or p == t for p, t in zip(r["puzzle"], r["text"][1::2])), r
    # How many held-out puzzles end solved is measured by bench/sudoku.py (bench/RESULTS.md), not here; but
    # the groups must do their part: without them this job solved 3 of these 6 (session 19), with them all
    # 6 at the first generation; at least 5 leaves room for a numerics change, not for the groups failing.
    assert sum(r["status"] == "ok" for r in rows) >= 5, [(r["status"], r["generations"]) for r in rows]
