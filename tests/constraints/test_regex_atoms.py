"""Integer/number ranges are exact (brute force against Python's re), formats validate strictly."""

from __future__ import annotations

import json
import random
import re

import jsonschema
import pytest

from constraints import regex_atoms as ra


def _py(rx: str) -> re.Pattern:
    return re.compile(rx)


@pytest.mark.parametrize(
    "lo,hi",
    [
        (0, 0),
        (0, 9),
        (3, 120),
        (-5, 5),
        (-120, -7),
        (17, 1234),
        (99, 100),
        (1, 1),
        (-1, 0),
        (250, 255),
        (-1000, 999),
    ],
)
def test_integer_range_exact(lo, hi):
    rx = _py(ra.integer_range(lo, hi))
    for v in range(lo - 300, hi + 301):
        assert bool(rx.fullmatch(str(v))) == (lo <= v <= hi), (lo, hi, v)
    assert not rx.fullmatch("-0") and not rx.fullmatch("007")


def test_integer_half_open():
    rx = _py(ra.integer_range(10, None))
    assert rx.fullmatch("10") and rx.fullmatch("123456") and not rx.fullmatch("9") and not rx.fullmatch("-11")
    rx = _py(ra.integer_range(None, -3))
    assert rx.fullmatch("-3") and rx.fullmatch("-99999") and not rx.fullmatch("-2") and not rx.fullmatch("0")


def test_number_range_is_inside():
    rng = random.Random(0)
    for lo, hi, lx, hx in [
        (0, 1, False, False),
        (0, 100, True, True),
        (-5.5, 2.25, False, True),
        (1, 1, False, False),
    ]:
        rx = _py(ra.number_range(lo, hi, lx, hx))
        for _ in range(3000):
            s = (
                rng.choice(["", "-"])
                + str(rng.randint(0, 120))
                + rng.choice(["", "." + str(rng.randint(0, 999))])
            )
            if rx.fullmatch(s):
                v = float(s)
                assert (v > lo if lx else v >= lo) and (v < hi if hx else v <= hi), (lo, hi, s)


def test_formats_validate_strictly():
    rng = random.Random(1)
    samples = {
        "date": lambda: f"20{rng.randint(0, 99):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "time": lambda: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
    }
    fc = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for fmt, gen in samples.items():
        rx = _py(ra.FORMATS[fmt])
        for _ in range(200):
            s = gen()
            assert rx.fullmatch(s)
            jsonschema.validate(s, {"type": "string", "format": fmt}, format_checker=fc)
    assert not _py(ra.FORMATS["date"]).fullmatch("2023-02-30")


def test_escape_and_literals():
    for value in ["a.b*c", 'q"uote', "back\\slash", "{x}|[y]^$", "日本", 3.5, None, [1, {"k": "v"}]]:
        lit = ra.json_literal(value)
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        assert re.fullmatch(lit, text), (value, lit)
