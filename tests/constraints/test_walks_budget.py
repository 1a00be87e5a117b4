"""Compile-time bounds (constraints/budget.py), the quote-free counted strings (regex_atoms.py),
random automaton words (constraints/walks.py) and `dgbatch check-schema --walks N`.

Every cap is a sound restriction: the automaton rejects what the schema forbids, accepts (a subset of) what it
allows, and its random words all validate with jsonschema. What cannot fit the budget is refused by name."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from constraints import budget
from constraints import regex_atoms as ra
from constraints.dfa import build_token_dfa, byte_dfa
from constraints.schema_errors import UnsupportedSchema
from constraints.schema_regex import schema_to_regex, strict_validator, translate_schema
from constraints.walks import byte_accepts as accepts
from constraints.walks import byte_walks, decode, token_walks
from jobs import cmd_check_schema
from jobs.cmd_check_schema import _check_walks, check_one

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(__file__).resolve().parent / "data" / "glaive_sample"


def all_valid(schema: dict, n: int = 120, **kw) -> list:
    """n random words of the schema's byte automaton, each checked with jsonschema; the parsed values."""
    v = strict_validator(schema)
    values = []
    for text in byte_walks(schema_to_regex(schema), n, **kw):
        value = json.loads(text)
        errors = list(v.iter_errors(value))
        assert not errors, (text, errors[0].message)
        values.append(value)
    return values


# --- strings: counted repetitions stay linear, lengths capped but minimums kept -----------------------------
@pytest.mark.timeout(300)
def test_counted_strings_compile_linearly():
    # with `\"` inside a counted repetition outlines-core's build was exponential (n=18: 33 s); now linear
    delta, final = byte_dfa(ra.string_pattern(3, 200))
    assert final.size < 12 * 200
    delta, final = byte_dfa(ra.string_pattern(300, None))
    assert final.size < 12 * 300


def test_counted_string_language():
    rx = ra.string_pattern(2, 5)
    assert accepts(rx, '"ab"') and accepts(rx, '"héllo"') and accepts(rx, r'"a\nb"')
    assert not accepts(rx, '"a"') and not accepts(rx, '"abcdef"') and not accepts(rx, '"a"b"')
    assert not accepts(rx, r'"a\"b"')  # the escaped quote is left out of counted parts (a subset)
    free = ra.string_pattern(2, None)
    assert accepts(free, r'"ab\"cd"') and not accepts(free, '"a"')
    assert accepts(ra.string_pattern(), r'"\""')  # unbounded strings keep every escape


def test_long_max_length_is_capped_and_min_length_kept():
    schema = {"type": "object", "properties": {"s": {"type": "string", "minLength": 2, "maxLength": 4096}}}
    rx = schema_to_regex(schema)
    assert not accepts(rx, json.dumps({"s": "a"}))  # minLength still enforced
    assert accepts(rx, json.dumps({"s": "a" * budget.STRING_CAP}))
    assert not accepts(rx, json.dumps({"s": "a" * (budget.STRING_CAP + 1)}))  # capped: a sound subset
    lengths = [len(v["s"]) for v in all_valid(schema) if "s" in v]
    assert lengths and min(lengths) >= 2 and max(lengths) <= budget.STRING_CAP
    big_min = {"type": "string", "minLength": 100, "maxLength": 4096}
    assert {len(v) for v in all_valid(big_min, n=100, max_len=500)} == {100}  # min above the cap: exact min


def test_min_length_over_the_budget_is_refused_by_pointer():
    schema = {"type": "object", "properties": {"a": {"type": "string", "minLength": 5000}}, "required": ["a"]}
    with pytest.raises(UnsupportedSchema, match=r"minLength 5000 .*\(at #/properties/a\)"):
        schema_to_regex(schema)


# --- arrays: maxItems capped, minItems kept, oversized automata refused -------------------------------------
def test_max_items_is_capped_and_min_items_kept():
    schema = {"type": "array", "items": {"type": "integer", "maximum": 9}, "maxItems": 1000}
    counts = [len(v) for v in all_valid(schema, n=150)]
    assert max(counts) <= budget.ITEMS_CAP and min(counts) == 0
    rx = schema_to_regex(schema)
    assert not accepts(rx, json.dumps([1] * (budget.ITEMS_CAP + 1))) and not accepts(rx, "[10]")
    at_least = {"type": "array", "items": {"enum": [1, 2]}, "minItems": 20, "maxItems": 1000}
    assert {len(v) for v in all_valid(at_least, n=100, max_len=30)} == {20}
    assert not accepts(schema_to_regex(at_least), json.dumps([1] * 19))


def test_oversized_required_parts_are_refused_naming_the_part():
    props = {f"k{i}": {"type": "string", "maxLength": 64} for i in range(400)}
    wide = {"type": "object", "properties": props, "required": list(props)}
    with pytest.raises(UnsupportedSchema, match=r"object too large to compile .*\(at #\)"):
        schema_to_regex(wide)
    item = {"type": "object", "properties": {f"k{i}": {"type": "string", "maxLength": 64} for i in range(8)}}
    tall = {"type": "object", "properties": {"rows": {"type": "array", "items": item, "minItems": 200}},
            "required": ["rows"]}
    with pytest.raises(UnsupportedSchema, match=r"array \(items x count\) too large .*at #/properties/rows"):
        schema_to_regex(tall)


def test_oversized_optional_parts_are_left_out_and_named():
    props = {f"k{i}": {"type": "string", "maxLength": 64} for i in range(130)}
    wide = translate_schema({"type": "object", "properties": props})
    gone = {w.split(":")[0].removeprefix("#/properties/") for w in wide.left_out}
    assert 0 < len(gone) < 130  # the largest optional fields, until the object fits
    assert all("object too large to compile" in w for w in wide.left_out)
    kept = sorted(set(props) - gone)
    assert accepts(wide.regex, json.dumps({kept[0]: "a", kept[-1]: "b"}))
    assert not accepts(wide.regex, json.dumps({kept[0]: "a", sorted(gone)[0]: "b"}))
    item = {"type": "object", "properties": {f"k{i}": {"type": "string", "maxLength": 64} for i in range(8)}}
    tall = {"type": "object", "properties": {"rows": {"type": "array", "items": item, "minItems": 200},
                                             "id": {"type": "integer"}}}
    got = translate_schema(tall)
    assert [w.split(":")[0] for w in got.left_out] == ["#/properties/rows"]
    assert accepts(got.regex, '{"id":3}') and not accepts(got.regex, '{"rows":[]}')
    with pytest.raises(UnsupportedSchema, match=r"minItems 300 .*\(at #\)"):
        schema_to_regex({"type": "array", "minItems": 300})


def test_the_fewest_largest_optional_fields_are_left_out():
    """Fields of mixed sizes: the ones left out are the largest, and putting back the smallest of them makes
    the object too large again (the count found by doubling and bisection is the fewest that fit)."""
    sizes = {f"k{i}": 8 + (i * 37) % 57 for i in range(300)}  # 8..64 (longer strings are capped at 64)
    props = {k: {"type": "string", "maxLength": n} for k, n in sizes.items()}
    got = translate_schema({"type": "object", "properties": props})
    gone = [w.split(":")[0].removeprefix("#/properties/") for w in got.left_out]
    assert 1 < len(gone) < len(props)
    kept = set(props) - set(gone)
    assert min(sizes[k] for k in gone) >= max(sizes[k] for k in kept)
    back = min(gone, key=lambda k: sizes[k])
    fewer = translate_schema({"type": "object", "properties": {k: props[k] for k in [*kept, back]}})
    assert fewer.left_out  # one more field than the fit: too large again


def test_state_estimate_tracks_the_automaton():
    for rx in (
        ra.string_pattern(0, 64),
        schema_to_regex({"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 10}),
        schema_to_regex({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"enum": ["x"]}}}),
    ):
        est, real = budget.estimate_states(rx), byte_dfa(rx)[1].size
        assert real / 3 <= est <= real * 3, (rx[:80], est, real)


# --- token walks and check-schema --walks -------------------------------------------------------------------
HAND = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 300},
            "kind": {"enum": ["a", "b", 7, None]},
            "n": {"type": "integer", "minimum": -5, "maximum": 120},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 50},
            "when": {"type": "string", "format": "date"},
        },
        "required": ["name", "kind"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 3}, "minItems": 2},
]


def test_token_walks_validate_and_fit_the_budget(vocab):
    schema = HAND[0]
    dfa = build_token_dfa(schema_to_regex(schema), vocab, [1])
    v = strict_validator(schema)
    seen_kinds = set()
    for toks in token_walks(dfa, vocab, 150, budget=60, seed=3):
        assert len(toks) <= 60
        value = json.loads(decode(toks, vocab))
        assert not list(v.iter_errors(value)), value
        seen_kinds.add(json.dumps(value["kind"]))
    assert len(seen_kinds) == 4  # every enum member is drawn
    with pytest.raises(ValueError, match="budget"):
        token_walks(dfa, vocab, 1, budget=int(dfa.dist[0]) - 1)


@pytest.mark.parametrize("schema", HAND)
def test_check_one_walks_on_hand_written_schemas(vocab, schema):
    res = check_one(schema, vocab, [1], max_new_tokens=256, canvas_length=32, seed=0, walks=100)
    assert res["supported"] and res["valid"], res
    assert res["walks"] == 100 and res["walks_invalid"] == 0


def test_check_one_walks_on_the_shipped_sample(vocab):
    files = sorted(SAMPLE.glob("*.json"))
    assert len(files) == 20
    walked = 0
    for f in files:
        res = check_one(json.loads(f.read_text()), vocab, [1], max_new_tokens=512, canvas_length=32, seed=1,
                        walks=100)
        if res["supported"]:
            assert res["valid"] and res["walks_invalid"] == 0, (f.name, res)
            walked += 1
        else:
            assert res["error"].startswith("unsupported: "), (f.name, res)
    assert walked >= 18


def test_walks_report_a_counterexample(vocab):
    dfa = build_token_dfa(ra.INTEGER, vocab, [1])  # an automaton that does not match the schema below
    out = _check_walks({"type": "string"}, dfa, vocab, 30, budget=20, seed=0)
    assert out["walks_invalid"] == 30 and out["valid"] is False
    assert out["error"].startswith("INVALID WALK") and json.loads(out["counterexample"]["text"]) is not None


def test_cli_prints_valid_no_with_the_counterexample(tmp_path, monkeypatch, capsys):
    from constraints import schema_regex

    broken = lambda schema, **kw: schema_regex.SchemaRegex(ra.INTEGER)  # noqa: E731 - a broken compiler
    monkeypatch.setattr(schema_regex, "translate_schema", broken)
    (tmp_path / "s.json").write_text(json.dumps({"type": "string"}))
    parser = argparse.ArgumentParser()
    cmd_check_schema.add_parser(parser)
    args = parser.parse_args([str(tmp_path / "s.json"), "--walks", "20", "--max-new-tokens", "16"])
    assert cmd_check_schema.run(args) == 1
    out = capsys.readouterr().out
    assert "valid=NO" in out and "counterexample: INVALID" in out, out


def test_walks_reach_every_length_and_stop(vocab):
    schema = {"type": "string", "maxLength": 3}
    dfa = build_token_dfa(schema_to_regex(schema), vocab, [1])
    lengths = {len(json.loads(decode(t, vocab))) for t in token_walks(dfa, vocab, 200, budget=10, seed=0)}
    assert lengths == {0, 1, 2, 3}
    assert np.all(dfa.dist >= 0)


def test_an_arrays_item_written_twice_counts_once_against_the_text_bound(monkeypatch):
    """`[item(,item)*]` writes the item twice; composed_dfa.py builds it once, so an item over half the
    text bound still fits (WashingtonPost's wp_98: an array of large objects)."""
    item = {"type": "object", "properties": {f"k{i}": {"type": "integer", "maximum": 9} for i in range(6)},
            "required": [f"k{i}" for i in range(6)]}
    item_chars = len(schema_to_regex(item))
    monkeypatch.setattr(budget, "MAX_REGEX_CHARS", int(item_chars * 1.5))
    rx = schema_to_regex({"type": "array", "items": item, "maxItems": 3})
    assert len(rx) > budget.MAX_REGEX_CHARS  # the text is over the bound, its distinct part is not
    row = json.dumps({f"k{i}": i for i in range(6)}, separators=(",", ":"))
    assert accepts(rx, f"[{row},{row}]") and not accepts(rx, f"[{row},{row},{row},{row}]")
    monkeypatch.setattr(budget, "MAX_REGEX_CHARS", item_chars + 5)  # the item fits, the array does not
    with pytest.raises(UnsupportedSchema, match=r"array \(items x count\) too large"):
        schema_to_regex({"type": "array", "items": item, "maxItems": 3})
