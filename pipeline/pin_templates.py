"""Pin templates: the three user-facing ways to write a row's pinned canvas (engine/pins.py), as text.

Owns the template grammar, its parsing into `Pins`, and the text an output of a template reads as:
- `holes`: text with holes, `{{hole:N}}` marking N free tokens: "The capital of {{hole:3}} is Paris."
  Every other character is pinned (tokenized piece by piece); a hole may end in pad tokens, so a shorter
  answer fits (pads decode to nothing). There is no escape: a literal "{{hole:" cannot appear.
- `json`: a JSON value whose string values "{{hole:N}}" are holes for a value (the model writes the value,
  quotes included for a string): {"name": "{{hole:6}}", "age": "{{hole:2}}"}. It is written compactly
  (", " and ": ") and then read as `holes` text.
- `grid`: one cell per character, `0` or `.` an empty cell (a 1-token hole), any other character pinned as
  its single token (e.g. a Sudoku row by row: "530070000600195000..."); a character that is not exactly one
  token is an error naming it.
After the template a stop token is pinned, so the row ends with it: max_new_tokens must be at least the
template's tokens + 1 (`TemplatePins.tokens_needed`). Every problem is a ValueError naming the template
form and the position in it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from engine.pins import FREE, Pins
from pipeline.generation_spec import PIN_FORMS as FORMS

_HOLE = re.compile(r"\{\{hole:(\d+)\}\}")
_MAX_HOLE = 4096
EMPTY_CELLS = "0."


@dataclass(frozen=True)
class TemplatePins:
    pins: Pins
    tokens_needed: int  # template tokens + the pinned stop token
    holes: int  # free positions


def template_pins(form: str, template: str, encode: Callable[[str], list[int]], stop_id: int) -> TemplatePins:
    """Pins of one row's template. `encode`: text -> token ids without special tokens; `stop_id`: the stop
    token pinned after the template (the checkpoint's first EOS id)."""
    if form not in FORMS:
        raise ValueError(f"pins: form must be one of {', '.join(FORMS)}, got {form!r}")
    if not isinstance(template, str) or not template:
        raise ValueError(f"pins ({form}): the template must be a non-empty string, got {template!r}")
    if form == "grid":
        toks = _grid(template, encode)
    else:
        toks = _holes(_json_text(template) if form == "json" else template, encode, form)
    if all(t != FREE for t in toks):
        raise ValueError(f"pins ({form}): the template has no hole, nothing to generate")
    toks.append(int(stop_id))
    return TemplatePins(Pins(tuple(toks)), len(toks), sum(t == FREE for t in toks))


def _holes(text: str, encode, form: str) -> list[int]:
    toks: list[int] = []
    pos = 0
    for m in _HOLE.finditer(text):
        toks += encode(text[pos : m.start()]) if m.start() > pos else []
        width = int(m.group(1))
        if not 1 <= width <= _MAX_HOLE:
            raise ValueError(f"pins ({form}): hole at character {m.start()}: width must be 1..{_MAX_HOLE}")
        toks += [FREE] * width
        pos = m.end()
    matched = {m.start() for m in _HOLE.finditer(text)}
    bad = [i for i in (m.start() for m in re.finditer(r"\{\{hole", text)) if i not in matched]
    if bad:
        raise ValueError(f"pins ({form}): malformed hole at character {bad[0]}: expected {{{{hole:N}}}}")
    toks += encode(text[pos:]) if pos < len(text) else []
    return toks


def _json_text(template: str) -> str:
    try:
        value = json.loads(template)
    except json.JSONDecodeError as e:
        raise ValueError(f"pins (json): the skeleton is not JSON: {e}") from None
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    # a hole stands for a whole value: drop the quotes json.dumps put around its marker
    return re.sub(r'"(\{\{hole:\d+\}\})"', r"\1", text)


def _grid(template: str, encode) -> list[int]:
    toks = []
    for i, ch in enumerate(template):
        if ch in EMPTY_CELLS:
            toks.append(FREE)
            continue
        ids = encode(ch)
        if len(ids) != 1:
            raise ValueError(f"pins (grid): cell {i} ({ch!r}) is {len(ids)} tokens, a grid cell must be one")
        toks.append(ids[0])
    return toks
