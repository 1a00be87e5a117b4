"""sudoku/grid.py: parsing, formatting, prompts, and every message path of check_solution / validate."""

from __future__ import annotations

import re

import pytest

from sudoku.grid import (
    CANVAS_REGEX,
    MARKERS,
    canvas_text,
    check_solution,
    format_grid,
    parse,
    prompt,
    template_values,
    to_string,
    validate,
)

# A classic puzzle and its (unique) solution.
PUZZLE = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def test_parse_accepts_zero_and_dot_and_round_trips():
    g = parse(PUZZLE)
    assert len(g) == 81 and g[0] == 5 and g[2] == 0
    assert parse(PUZZLE.replace("0", ".")) == g
    assert to_string(g) == PUZZLE


@pytest.mark.parametrize("bad, msg", [
    (PUZZLE[:80], "81 cells, got 80"),
    (PUZZLE + "1", "81 cells, got 82"),
    ("x" + PUZZLE[1:], "cell r1c1: bad character 'x'"),
    (PUZZLE[:40] + "a" + PUZZLE[41:], "cell r5c5: bad character 'a'"),
    ("55" + PUZZLE[2:], "cell r1c2 (5) breaks row 1"),
    (PUZZLE[:9] + "5" + PUZZLE[10:], "cell r2c6 (5) breaks row 2"),
])
def test_parse_errors_name_the_problem(bad, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        parse(bad)


def test_parse_rejects_non_string():
    with pytest.raises(ValueError, match="must be a string"):
        parse(123)  # type: ignore[arg-type]


def test_conflict_kinds_col_and_box():
    col = ["0"] * 81
    col[0], col[27] = "4", "4"  # same column, different rows and boxes
    with pytest.raises(ValueError, match=r"cell r4c1 \(4\) breaks col 1"):
        parse("".join(col))
    box = ["0"] * 81
    box[0], box[10] = "7", "7"  # r1c1 and r2c2: same box only
    with pytest.raises(ValueError, match=r"cell r2c2 \(7\) breaks box 1"):
        parse("".join(box))


def test_format_grid_layout():
    text = format_grid(PUZZLE)
    lines = text.splitlines()
    assert len(lines) == 11
    assert lines[0] == "5 3 . | . 7 . | . . ."
    assert lines[3] == "------+-------+------"
    assert format_grid(parse(PUZZLE)) == text


def test_check_solution_ok_with_separators():
    assert check_solution(PUZZLE, SOLUTION) is None
    spaced = "\n".join(" ".join(SOLUTION[r * 9:r * 9 + 9]) for r in range(9))
    assert check_solution(PUZZLE, spaced) is None
    assert check_solution(PUZZLE, format_grid(SOLUTION)) is None  # '|' and '-' rules are separators


def test_check_solution_messages():
    assert check_solution(PUZZLE, SOLUTION[:80]) == "wrong length: 80 cells, expected 81"
    assert check_solution(PUZZLE, "") == "wrong length: 0 cells, expected 81"
    assert check_solution(PUZZLE, SOLUTION[:5] + "0" + SOLUTION[6:]) == "cell r1c6 is empty ('0')"
    assert check_solution(PUZZLE, "." + SOLUTION[1:]) == "cell r1c1 is empty ('.')"
    # swap two digits of row 1 at clue r1c1 (5) and free cell r1c2... r1c2 is a clue (3); use r1c3/r1c4 (free)
    swapped = SOLUTION[:2] + SOLUTION[3] + SOLUTION[2] + SOLUTION[4:]
    msg = check_solution(PUZZLE, swapped)
    assert msg is not None and "breaks col" in msg  # rows stay permutations; columns break
    changed = "6" + SOLUTION[1:]
    assert check_solution(PUZZLE, changed) == "clue changed at r1c1: 5 -> 6"
    # a valid grid that is not this puzzle's solution changes a clue
    relabel = SOLUTION.translate(str.maketrans("123456789", "234567891"))
    assert check_solution(PUZZLE, relabel).startswith("clue changed at r1c1")


def test_check_solution_row_break_on_empty_puzzle():
    empty = "0" * 81
    bad = "1" * 81
    assert check_solution(empty, bad) == "cell r1c2 (1) breaks row 1"


def test_validate_reads_the_row_puzzle():
    assert validate(SOLUTION, {"puzzle": PUZZLE}) is None
    assert validate(SOLUTION[:80], {"puzzle": PUZZLE}) == "wrong length: 80 cells, expected 81"
    assert validate(SOLUTION, {"id": 3}) == "row has no 'puzzle' field"


def test_prompt_and_template_values_write_the_canvas_text():
    assert prompt(PUZZLE.replace("0", ".")) == "Solve this Sudoku: " + canvas_text(PUZZLE)
    assert template_values({"puzzle": PUZZLE.replace("0", ".")}) == {"puzzle": canvas_text(PUZZLE)}


def test_canvas_text_puts_each_cell_after_its_own_marker():
    assert len(set(MARKERS)) == 81 and not any(ch.isdigit() or ch.isspace() or ch == "." for ch in MARKERS)
    text = canvas_text(PUZZLE.replace("0", "."))
    assert len(text) == 162 and text[:6] == "A5B3C0" and text[-2:] == "\\9"
    assert text[0::2] == MARKERS and text[1::2] == PUZZLE
    assert canvas_text(SOLUTION)[1::2] == SOLUTION
    assert check_solution(PUZZLE, canvas_text(SOLUTION)) is None  # the markers read as separators
    assert re.fullmatch(CANVAS_REGEX, canvas_text(SOLUTION))
    assert not re.fullmatch(CANVAS_REGEX, canvas_text(PUZZLE))  # an empty cell is no answer
    with pytest.raises(ValueError, match="81 cells"):
        canvas_text(PUZZLE[:80])
    with pytest.raises(ValueError, match="breaks row 1"):
        canvas_text("55" + PUZZLE[2:])
