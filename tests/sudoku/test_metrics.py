"""sudoku/metrics.py: solved_fraction counts only checked solutions; the monitor runs the engine's reference
loop on held-out rows (a random tiny model solves none) and leaves the global RNG as it found it."""

from __future__ import annotations

import pytest
import torch

from engine.pins import FREE
from model import DiffusionGemma, load_tokenizer
from sudoku.grid import MARKERS
from sudoku.metrics import clue_pins, monitor, solved_fraction
from train.sudoku import TOKENIZER_DIR, sudoku_model_config
from train.sudoku_data import END_OF_TURN, load_heldout

PUZZLE = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def test_solved_fraction():
    wrong = "6" + SOLUTION[1:]
    assert solved_fraction([SOLUTION, wrong, " ".join(SOLUTION)], [PUZZLE] * 3) == pytest.approx(2 / 3)
    assert solved_fraction(["", SOLUTION[:80]], [PUZZLE, PUZZLE]) == 0.0
    with pytest.raises(ValueError, match="2 outputs for 1 puzzles"):
        solved_fraction([SOLUTION, SOLUTION], [PUZZLE])
    with pytest.raises(ValueError, match="no puzzles"):
        solved_fraction([], [])


def test_monitor_on_a_random_model():
    tok = load_tokenizer(str(TOKENIZER_DIR))
    torch.manual_seed(0)
    model = DiffusionGemma(sudoku_model_config(tok.vocab_size, 32, 2, 164, 352)).float().eval()
    rows = [r for r in load_heldout() if r["clues"] in (22, 40)][:4]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    res = monitor(model, tok, rows, steps=2)
    assert torch.equal(torch.rand(1), before)  # the monitor's seeding does not leak into training's RNG
    assert res == {"solved": 0.0, "hard_solved": 0.0, "n": 4, "n_hard": sum(r["clues"] <= 25 for r in rows)}
    assert monitor(model, tok, rows, steps=2, pin_clues=False)["solved"] == 0.0


def test_clue_pins_put_each_marker_and_clue_at_its_canvas_offset():
    tok = load_tokenizer(str(TOKENIZER_DIR))
    pins = clue_pins(tok, PUZZLE.replace("0", "."), END_OF_TURN)
    assert len(pins.tokens) == 163 and pins.tokens[-1] == END_OF_TURN  # 81 markers, 81 cells, the stop
    one = lambda ch: tok.encode(ch, add_special_tokens=False)  # noqa: E731
    for i, c in enumerate(PUZZLE):
        assert one(MARKERS[i]) == [pins.tokens[2 * i]]  # every marker is one token, pinned
        assert pins.tokens[2 * i + 1] == (FREE if c == "0" else one(c)[0])
