"""Sudoku grids as text: parse a puzzle string, format a grid, and check a model's answer against a puzzle.

A puzzle is the common 81-character layout, row by row, with `0` or `.` for an empty cell. A grid here is a
list of 81 ints (0 = empty). `check_solution` is the acceptance test every solver output goes through
(bench, pipeline validator, training monitor): it ignores separators and whitespace in the answer text, so
"534 678 912 / ..." and the bare 81 digits are the same answer. `canvas_text` is the layout the shipped
Sudoku model reads and writes: each cell after a marker character of its own.
"""

from __future__ import annotations

DIGITS = "123456789"
# Cell index -> (row, col, box); the three groups every cell belongs to.
ROW = [i // 9 for i in range(81)]
COL = [i % 9 for i in range(81)]
BOX = [(i // 27) * 3 + (i % 9) // 3 for i in range(81)]


def parse(puzzle: str) -> list[int]:
    """81-char puzzle string -> 81 ints (0 = empty). Raises ValueError naming the problem (length, a bad
    character and where, or two equal clues in a row/column/box)."""
    if not isinstance(puzzle, str):
        raise ValueError(f"puzzle must be a string, got {type(puzzle).__name__}")
    s = puzzle.strip()
    if len(s) != 81:
        raise ValueError(f"puzzle must have 81 cells, got {len(s)} characters")
    grid = []
    for i, ch in enumerate(s):
        if ch in "0.":
            grid.append(0)
        elif ch in DIGITS:
            grid.append(int(ch))
        else:
            raise ValueError(f"puzzle cell r{ROW[i] + 1}c{COL[i] + 1}: bad character {ch!r} "
                             "(expected 1-9, 0 or .)")
    clash = first_conflict(grid)
    if clash:
        raise ValueError(f"puzzle clues conflict: {clash}")
    return grid


def to_string(grid: list[int]) -> str:
    """81 ints -> the 81-char layout with `0` for empty cells."""
    if len(grid) != 81:
        raise ValueError(f"grid must have 81 cells, got {len(grid)}")
    return "".join(str(v) for v in grid)


def format_grid(grid: list[int] | str) -> str:
    """A human-readable board: 9 lines, `.` for empty, `|` between boxes and a rule between bands."""
    g = parse(grid) if isinstance(grid, str) else grid
    lines = []
    for r in range(9):
        if r in (3, 6):
            lines.append("------+-------+------")
        cells = [str(v) if v else "." for v in g[r * 9:r * 9 + 9]]
        lines.append(" | ".join(" ".join(cells[c:c + 3]) for c in (0, 3, 6)))
    return "\n".join(lines)


def first_conflict(grid: list[int]) -> str | None:
    """The first filled cell that repeats a digit in its row, column or box, as 'cell rRcC (D) breaks
    row R'; None when there is none. Empty cells are ignored."""
    for kind, key in (("row", ROW), ("col", COL), ("box", BOX)):
        seen: dict[tuple[int, int], int] = {}
        for i, v in enumerate(grid):
            if not v:
                continue
            if (key[i], v) in seen:
                return f"cell r{ROW[i] + 1}c{COL[i] + 1} ({v}) breaks {kind} {key[i] + 1}"
            seen[(key[i], v)] = i
    return None


def answer_digits(text: str) -> str:
    """The answer text with separators and whitespace dropped (every char that is not a digit or `.`)."""
    return "".join(ch for ch in text if ch.isdigit() or ch == ".")


def check_solution(puzzle: str, text: str) -> str | None:
    """None when `text` is a full valid solution consistent with the puzzle's clues; else a short message.

    Separators and whitespace in `text` are ignored; what remains must be exactly 81 digits 1-9."""
    clues = parse(puzzle)
    digits = answer_digits(text)
    if len(digits) != 81:
        return f"wrong length: {len(digits)} cells, expected 81"
    for i, ch in enumerate(digits):
        if ch not in DIGITS:
            return f"cell r{ROW[i] + 1}c{COL[i] + 1} is empty ({ch!r})"
    grid = [int(ch) for ch in digits]
    for i, (c, v) in enumerate(zip(clues, grid)):
        if c and c != v:
            return f"clue changed at r{ROW[i] + 1}c{COL[i] + 1}: {c} -> {v}"
    return first_conflict(grid)


def validate(text: str, row: dict) -> str | None:
    """Pipeline validator (`structured_output.validator: "sudoku.grid:validate"`): checks the decoded
    output against the row's `puzzle` field; None = ok, else the message."""
    if "puzzle" not in row:
        return "row has no 'puzzle' field"
    return check_solution(row["puzzle"], text)


PROMPT = "Solve this Sudoku: {puzzle}"
# The prompt of pinned mode: the clues are on the canvas (`canvas_text`), so the prompt need not repeat them.
PINNED_PROMPT = "Solve this Sudoku."

# The canvas layout: each cell's digit follows a marker character of its own (81 distinct characters, each
# one token of the shipped tokenizer; no digit, `.` or whitespace, so `answer_digits` reads past them).
# Attention sees only relative positions (RoPE), but a cell's row, column and box depend on where it is;
# with the markers pinned, a cell reads which cell it is from the token just before it, a lookup a small
# model learns at once instead of inferring its place from distances.
MARKERS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
           "!#$%&()*+,-/:;<=>?@[]^_|~`'\"\\")


# A solved canvas as the job's structured output: a character, then a digit 1-9, 81 times. The markers are
# pinned, so with the pins it holds each empty cell to one digit 1-9 (constraints/hook.py `with_pins`).
CANVAS_REGEX = "(.[1-9]){81}"


# The 27 groups (9 rows, 9 columns, 9 boxes) as cell indices, and as the canvas output offsets of their digits
# (cell i's digit follows its marker: offset 2i+1 of canvas_text).
UNITS = tuple(tuple(i for i in range(81) if key[i] == k) for key in (ROW, COL, BOX) for k in range(9))
CANVAS_GROUPS = tuple(tuple(2 * i + 1 for i in unit) for unit in UNITS)


def canvas_groups() -> list[list[int]]:
    """`structured_output.all_different.groups` of the canvas layout (constraints/all_different.py): every
    row, column and box of canvas_text, as output offsets of its 9 digits."""
    return [list(g) for g in CANVAS_GROUPS]


def canvas_text(cells: str) -> str:
    """A puzzle (81 chars, `0` or `.` empty) or a solution as canvas text: marker, cell, marker, cell, ...
    Raises `parse`'s ValueError for what is not a grid. Empty cells are written `0`, so the text is also
    the `grid` pin template of pinned mode (markers and clues pinned, empty cells holes)."""
    return "".join(m + ch for m, ch in zip(MARKERS, to_string(parse(cells))))  # parse names any problem


def prompt(puzzle: str) -> str:
    """The model's user prompt for a puzzle when the clues are not pinned: the puzzle as canvas text
    (`canvas_text`, `0` for empty cells; a `.` is rewritten to `0`), so a cell's clue sits after the same
    marker in the prompt as the cell on the canvas."""
    return PROMPT.format(puzzle=canvas_text(puzzle))


def template_values(values: dict[str, str]) -> dict[str, str]:
    """A job's `input.template_values` for a `puzzle` column when the clues go in the prompt ("Solve this
    Sudoku: {puzzle}"): the puzzle as the shipped model reads it there, its canvas text (`prompt`), so files
    using `0` or `.` both work. A puzzle that does not parse raises, which makes that row an error row
    naming the problem. (jobs/examples/sudoku.yaml pins the clues instead: `generation.pins.map`.)"""
    return {"puzzle": canvas_text(values["puzzle"])}
