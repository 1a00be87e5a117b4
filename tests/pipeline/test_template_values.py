"""`input.template_values` ("module:function"): a template row's values mapped before the template is filled
(pipeline/rows.py); a bad name fails the spec check, what the function raises is that row's error, and the
field enters the plan fingerprint only when set."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.plan import fingerprint_components
from pipeline.rows import prepare_rows
from pipeline.spec import InputSpec, JobSpec, SpecError
from sudoku.grid import canvas_text

GOOD = "0" * 80 + "5"


def _rows(**inp):
    table = pa.table({"puzzle": [GOOD.replace("0", "."), GOOD, "12x"], "n": ["1", "2", "3"]})
    spec = InputSpec(path="in.parquet", template="Solve this Sudoku: {puzzle} ({n})", **inp)
    return prepare_rows(table, spec, job_seed=0, file_rel="in.parquet", first_row=0)


def test_values_are_mapped_before_the_template_is_filled():
    plain = _rows()
    assert plain[0].prompt == f"Solve this Sudoku: {GOOD.replace('0', '.')} (1)"
    mapped = _rows(template_values="sudoku.grid:template_values")
    assert [r.prompt for r in mapped[:2]] == [f"Solve this Sudoku: {canvas_text(GOOD)} ({n})" for n in (1, 2)]
    assert [(r.id, r.seed) for r in mapped] == [(r.id, r.seed) for r in plain]
    bad = mapped[2]  # the function raised on this row only: an error row naming the row and the cause
    assert bad.prompt is None and bad.error.startswith("in.parquet row 2: input.template_values")
    assert "ValueError: puzzle must have 81 cells" in bad.error


def test_a_function_that_returns_no_dict_of_text_is_a_row_error():
    rows = _rows(template_values="builtins:len")
    assert all(r.error and "returned int, not a dict of str" in r.error for r in rows)


@pytest.mark.parametrize("name, message", [
    ("sudoku.grid", "not of the form 'module:function'"),
    ("sudoku.grid:nope", "has no attribute 'nope'"),
    ("sudoku.grid:DIGITS", "is a str, not a callable"),
])
def test_a_bad_name_fails_the_spec_check(name, message):
    job = {"model": {"path": "m"}, "output": {"path": "out"},
           "input": {"path": "in.parquet", "template": "{puzzle}", "template_values": name}}
    with pytest.raises(SpecError, match="input.template_values") as err:
        JobSpec.parse(job)
    assert message in str(err.value)


def test_needs_a_template_and_enters_the_fingerprint_only_when_set():
    with pytest.raises(ValueError, match="input.template_values: maps the values of input.template"):
        InputSpec(path="x", prompt_column="p", template_values="sudoku.grid:template_values")

    def prompt_part(**inp) -> dict:
        job = {"model": {"path": "m"}, "input": {"path": "in.parquet", "template": "{puzzle}", **inp},
               "output": {"path": "out"}}
        return fingerprint_components(JobSpec.parse(job), [], {})["prompt"]

    assert "template_values" not in prompt_part()
    assert prompt_part(template_values="sudoku.grid:template_values")["template_values"] == \
        "sudoku.grid:template_values"
