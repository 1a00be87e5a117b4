"""generation.pins in a job (pipeline/backend.py, pipeline/pin_templates.py): each form's template holds in
the output text, holes are filled, a JSON skeleton with a schema always validates, bad templates are error
rows naming the column, and the spec refuses unknown forms. The shipped small model, in process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.backend import EngineBackend
from pipeline.generator import RowGenerator, job_columns
from pipeline.spec import JobSpec, SpecError

SMALL = str(Path(__file__).resolve().parents[2] / "model" / "assets" / "dgbatch-small")


def _run(tmp_path, rows: list[dict], pins: dict, **over) -> list[dict]:
    job = {"input": {"path": str(tmp_path / "in"), "prompt_column": "prompt"},
           "output": {"path": str(tmp_path / "out")}, "model": {"path": SMALL},
           "generation": {"max_new_tokens": 64, "max_denoising_steps": 8, "pins": pins}, **over}
    spec = JobSpec.parse(job)
    assert pins["column"] in job_columns(spec)
    table = pa.Table.from_pylist([{"id": f"r{i}", **r} for i, r in enumerate(rows)])
    out, _ = RowGenerator(spec, EngineBackend(spec)).process(table, file_rel="in.parquet", first_row=0,
                                                             attempt=1)
    return out.to_pylist()


def test_holes_and_grid_templates_hold_in_the_output(tmp_path):
    rows = [{"prompt": "Fill in.", "t": "The capital of {{hole:3}} is Paris."},
            {"prompt": "Fill in.", "t": "{{hole:2}} plus {{hole:2}}"},
            {"prompt": "Fill in.", "t": "no hole here"},
            {"prompt": "Fill in.", "t": "bad {{hole:x}}"},
            {"prompt": "Fill in.", "t": None}]
    got = _run(tmp_path, rows, {"column": "t", "form": "holes"})
    assert [r["status"] for r in got] == ["ok", "ok", "error", "error", "error"]
    a, b = got[0]["text"], got[1]["text"]
    assert a.startswith("The capital of ") and a.endswith(" is Paris."), a
    assert " plus " in b
    assert "column t" in got[2]["error"] and "no hole" in got[2]["error"]
    assert "malformed hole" in got[3]["error"]
    grid = _run(tmp_path, [{"prompt": "Sudoku", "g": "53..7....6..195"}], {"column": "g", "form": "grid"})
    text = grid[0]["text"]  # an empty cell holds one token (of any width; pad: none)
    assert grid[0]["status"] == "ok" and re.fullmatch(r"53.*7.*6.*195", text, re.S), text


def test_json_skeleton_with_a_schema_always_validates(tmp_path):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                               "pop": {"type": "integer", "minimum": 0}},
              "required": ["city", "pop"], "additionalProperties": False}
    skel = json.dumps({"city": "{{hole:5}}", "pop": "{{hole:4}}"})
    bad = json.dumps({"town": "{{hole:5}}", "pop": "{{hole:4}}"})
    rows = [{"prompt": f"A city, {i}", "s": skel} for i in range(4)] + [{"prompt": "x", "s": bad}]
    got = _run(tmp_path, rows, {"column": "s", "form": "json"}, structured_output={"json_schema": schema})
    for r in got[:4]:
        assert r["status"] == "ok", r
        value = json.loads(r["text"])
        assert set(value) == {"city", "pop"} and isinstance(value["pop"], int)
    assert got[4]["status"] == "error" and "the pin at output offset" in got[4]["error"]


def test_the_spec_checks_pins(tmp_path):
    base = {"input": {"path": str(tmp_path / "in"), "prompt_column": "prompt"},
            "output": {"path": str(tmp_path / "out")}}
    with pytest.raises(SpecError, match="form"):
        JobSpec.parse({**base, "generation": {"pins": {"column": "t", "form": "sudoku"}}})
    with pytest.raises(SpecError, match="column"):
        JobSpec.parse({**base, "generation": {"pins": {"form": "grid"}}})
    plain = JobSpec.parse(base)
    assert "pins" not in plain.generation.fingerprint_dict()


def test_a_map_turns_the_column_into_the_template(tmp_path):
    """`pins.map` ("module:function"): the column's value through the user's function is the template
    (here a Sudoku puzzle into the canvas layout, sudoku/grid.py `canvas_text`); what the function raises, or
    a return that is not text, is that row's error; a bad name fails the spec; and a job without a map
    keeps the fingerprint it had before `map` existed."""
    puzzle = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
    rows = [{"prompt": "Sudoku", "g": puzzle.replace("0", ".")}, {"prompt": "Sudoku", "g": "12x"}]
    got = _run(tmp_path, rows, {"column": "g", "form": "grid", "map": "sudoku.grid:canvas_text"},
               generation={"max_new_tokens": 168, "max_denoising_steps": 4,
                           "pins": {"column": "g", "form": "grid", "map": "sudoku.grid:canvas_text"}})
    text = got[0]["text"]
    # markers and clues pinned (a hole holds one token of any width: the small model is no Sudoku solver)
    assert got[0]["status"] == "ok" and text.startswith("A5B3C") and text.endswith('"7\\9'), text
    assert got[1]["status"] == "error"
    assert "column g: pins.map 'sudoku.grid:canvas_text' raised ValueError" in got[1]["error"]
    bad = _run(tmp_path, rows[:1], {"column": "g", "form": "grid", "map": "builtins:len"})
    assert bad[0]["status"] == "error" and "returned int, not a str" in bad[0]["error"]
    base = {"input": {"path": str(tmp_path / "in"), "prompt_column": "prompt"},
            "output": {"path": str(tmp_path / "out")}}
    with pytest.raises(SpecError, match="has no attribute 'nope'"):
        JobSpec.parse({**base, "generation": {"pins": {"column": "g", "form": "grid",
                                                        "map": "sudoku.grid:nope"}}})
    unmapped = JobSpec.parse({**base, "generation": {"pins": {"column": "g", "form": "grid"}}})
    assert unmapped.generation.fingerprint_dict()["pins"] == {"column": "g", "form": "grid"}
    pins = {"column": "g", "form": "grid", "map": "sudoku.grid:canvas_text"}
    mapped = JobSpec.parse({**base, "generation": {"pins": pins}})
    assert mapped.generation.fingerprint_dict()["pins"] == pins


def test_all_different_groups_hold_in_every_row(tmp_path):
    """structured_output.all_different over a grid template's cells: every ok row's five cells are a
    permutation of the five values (pins included), a row whose pins repeat a value in a group is an error
    row naming it, and a value that is not one token fails the job before any row."""
    so = {"regex": "[a-e]{5}", "all_different": {"groups": [[0, 1, 2, 3, 4]], "values": list("abcde")}}
    rows = [{"prompt": f"Rank these, {i}.", "g": t} for i, t in enumerate(["....."] * 4 + ["c....", "a.a.."])]
    got = _run(tmp_path, rows, {"column": "g", "form": "grid"}, structured_output=so)
    assert [r["status"] for r in got] == ["ok"] * 5 + ["error"], got
    for r in got[:5]:
        assert sorted(r["text"]) == list("abcde"), r
    assert got[4]["text"][0] == "c"
    assert "all_different" in got[5]["error"] and "offsets 0 and 2" in got[5]["error"], got[5]
    bad = dict(so, all_different={"groups": [[0, 1]], "values": ["a", "dgbatch-not-one-token"]})
    with pytest.raises(ValueError, match="all_different.values: 'dgbatch-not-one-token' is .* tokens"):
        _run(tmp_path, rows[:1], {"column": "g", "form": "grid"}, structured_output=bad)


def test_the_spec_checks_all_different(tmp_path):
    base = {"input": {"path": str(tmp_path), "prompt_column": "p"}, "output": {"path": str(tmp_path / "o")}}
    for section, msg in [({"groups": "no_such_module:f", "values": ["a"]}, "no_such_module"),
                         ({"groups": [], "values": ["a"]}, "no group given"),
                         ({"groups": [[0]], "values": ["a", "a"]}, "a value repeats"),
                         ({"groups": [[0]], "values": ["a"], "extra": 1}, "extra")]:
        with pytest.raises(SpecError, match=msg):
            JobSpec.parse({**base, "structured_output": {"regex": "a", "all_different": section}})
    ok = JobSpec.parse({**base, "structured_output": {"regex": "a"}})
    assert "all_different" not in ok.structured_output.model_dump()  # plan fingerprints of older jobs hold
