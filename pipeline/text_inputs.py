"""JSON Lines and CSV inputs: index a file once at listing, then read any row range as an Arrow table.

A row is a non-blank line of a JSONL file (openai-batch files are JSONL), or a record after the header of
a CSV file (RFC 4180 quoting as Python's csv module reads it: a quoted field may span lines). Blank lines
are not rows. A line that is not valid JSON, not an object, not UTF-8, or a CSV record whose field count
differs from the header's is still a row: it reads as nulls with a reason naming the file and line
(`TextRead.unreadable`), and becomes that row's error row (pipeline/rows.py), never a failed job.

`scan` reads the whole file once (at listing, in the driver): it counts rows, keeps a seek point (byte
offset, line number) every GROUP_ROWS rows, so that a shard's read starts near its first row, and fixes
each column's Arrow type from every value in the file, so every shard of a file reads the same types:
- JSONL: bool, int64 (ints), float64 (numbers), string; objects, arrays and columns mixing kinds are
  their JSON text (strings stay as they are). A key missing from a line is null there.
- CSV: int64 when every non-empty cell is an integer as JSON writes one ("-3"; "007" and "+3" are not),
  float64 when every one is a JSON number ("2.5", "1e3"), else string; an empty cell is null.
Planning (pipeline/shards.py) cuts rows by these counts, so the same file always gives the same shards.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa

GROUP_ROWS = 1024  # rows between seek points
TYPES = {"bool": pa.bool_(), "int64": pa.int64(), "double": pa.float64(), "string": pa.string()}
_INT = re.compile(r"-?(0|[1-9][0-9]*)")  # JSON's integers and numbers: "007", "+3", ".5" stay text
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass(frozen=True)
class TextIndex:
    """What `scan` learns of a file: rows per group, each group's seek point, the columns' types."""

    row_groups: tuple[int, ...]
    seeks: tuple[tuple[int, int], ...]  # (byte offset, line number) of each group's first row
    columns: tuple[tuple[str, str], ...]  # (name, Arrow type name in TYPES), in file order

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(n, TYPES[t]) for n, t in self.columns])


@dataclass
class TextRead:
    table: pa.Table
    unreadable: dict[int, str]


class _Lines:
    """Binary lines of a file as text, tracking the byte offset and line number of what comes next."""

    def __init__(self, f: IO[bytes], offset: int, line: int):
        self.f, self.offset, self.line = f, offset, line  # `line`: the number of the line last read
        self.start = offset  # byte offset of the line last read
        self.bad: str | None = None  # why a line since the last reset was not UTF-8

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self.f.readline()
        if not raw:
            raise StopIteration
        if self.offset == 0 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark opens the file
            raw, self.offset = raw[3:], 3
        self.start = self.offset
        self.offset += len(raw)
        self.line += 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.bad = self.bad or f"line {self.line}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
            return raw.decode("utf-8", "replace")


def _json_records(lines: _Lines) -> Iterator[tuple[int, int, Any, str | None]]:
    """(byte offset, line, object or None, why it is unreadable) per row."""
    for text in lines:
        start, line = lines.start, lines.line
        if not text.strip():
            lines.bad = None
            continue
        why, obj = lines.bad, None
        lines.bad = None
        if why is None:
            try:
                obj = json.loads(text.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                why = f"line {line}: not valid JSON ({exc.msg}: column {exc.colno})"
            else:
                if not isinstance(obj, dict):
                    why, obj = f"line {line}: a JSON {type(obj).__name__}, not an object", None
        yield start, line, obj, why


def _csv_records(lines: _Lines, width: int | None) -> Iterator[tuple[int, int, list[str] | None, str | None]]:
    """(byte offset, line, fields or None, why it is unreadable) per record; `width`: the header's fields."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # a long prompt is one long field
    reader = csv.reader(lines)
    while True:
        start, line = lines.offset, lines.line + 1
        lines.bad = None
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, line, None, f"line {line}: not valid CSV ({exc})"
            continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if lines.bad:
            yield start, line, None, lines.bad
        elif width is not None and len(fields) != width:
            yield start, line, None, f"line {line}: {len(fields)} fields, the header has {width}"
        else:
            yield start, line, fields, None


def _header(lines: _Lines) -> list[str]:
    first = next(_csv_records(lines, None), None)
    if first is None or first[2] is None:
        raise ValueError("no CSV header" + (f" ({first[3]})" if first else ""))
    names = [n.strip() for n in first[2]]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"the CSV header needs distinct, non-empty column names; got {names}")
    return names


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int64" if _INT64[0] <= v <= _INT64[1] else "text"
    if isinstance(v, float):
        return "double"
    return "string" if isinstance(v, str) else "text"  # text: JSON text of an object, array or huge int


def _json_type(kinds: set[str]) -> str:
    if len(kinds) == 1 and kinds <= {"bool", "int64", "double", "string"}:
        return next(iter(kinds))
    return "double" if kinds == {"int64", "double"} else "string"


def scan(f: IO[bytes], fmt: str, must_have: tuple[str, ...] = ()) -> TextIndex:
    """Index a whole file (module docstring). `must_have`: columns that exist even when no line sets them
    (openai-batch's optional method and url). Raises ValueError for a CSV file without a usable header."""
    lines = _Lines(f, 0, 0)
    groups: list[int] = []
    seeks: list[tuple[int, int]] = []
    if fmt == "csv":
        names = _header(lines)
        ints, floats = [True] * len(names), [True] * len(names)
        records: Iterator = _csv_records(lines, len(names))
    else:
        kinds: dict[str, set[str]] = {}
        records = _json_records(lines)
    for start, line, rec, _ in records:
        if not groups or groups[-1] == GROUP_ROWS:
            groups.append(0)
            seeks.append((start, line))
        groups[-1] += 1
        if rec is None:
            continue
        if fmt == "csv":
            for j, cell in enumerate(rec):
                if cell:
                    ints[j] = ints[j] and bool(_INT.fullmatch(cell)) and _INT64[0] <= int(cell) <= _INT64[1]
                    floats[j] = floats[j] and bool(_FLOAT.fullmatch(cell))
        else:
            for k, v in rec.items():
                kinds.setdefault(k, set())
                if v is not None:
                    kinds[k].add(_kind(v))
    if fmt == "csv":
        columns = [(n, "int64" if i else "double" if fl else "string")
                   for n, i, fl in zip(names, ints, floats)]
    else:
        columns = [(k, _json_type(ks) if ks else "string") for k, ks in kinds.items()]
        columns += [(c, "string") for c in must_have if c not in kinds]
    return TextIndex(tuple(groups), tuple(seeks), tuple(columns))


def _cell(v: Any, kind: str) -> Any:
    """A JSON value as a cell of a column of `kind` (see _json_type)."""
    if v is None or kind != "string" or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


def _csv_cell(s: str, kind: str) -> Any:
    if s == "":
        return None
    return int(s) if kind == "int64" else float(s) if kind == "double" else s


def read_rows(f: IO[bytes], fmt: str, url: str, columns: tuple[tuple[str, str], ...],
              seek: tuple[int, int, int], start: int, num_rows: int, want: list[str]) -> TextRead:
    """Rows [start, start+num_rows) of a file, `want` columns, reading from `seek` = (row, byte offset, line
    number) of a row at or before `start`. Raises OSError when the file ends first (it changed after
    planning) and KeyError for a column the file does not have."""
    kinds = dict(columns)
    missing = [c for c in want if c not in kinds]
    if missing:
        raise KeyError(f"{url}: no column {missing[0]!r}; columns are {list(kinds)}")
    row, offset, line = seek
    f.seek(offset)
    lines = _Lines(f, offset, line - 1)
    names = [n for n, _ in columns]
    at = {n: j for j, n in enumerate(names)}
    records = _csv_records(lines, len(names)) if fmt == "csv" else _json_records(lines)
    cells: dict[str, list[Any]] = {c: [] for c in want}
    unreadable: dict[int, str] = {}
    got = 0
    for _, _, rec, why in records:
        if row < start:
            row += 1
            continue
        if why is not None:
            unreadable[got] = f"{url} {why}"
        for c in want:
            if rec is None:
                cells[c].append(None)
            elif fmt == "csv":
                cells[c].append(_csv_cell(rec[at[c]], kinds[c]))
            else:
                cells[c].append(_cell(rec.get(c), kinds[c]))
        got += 1
        if got == num_rows:
            break
    if got != num_rows:
        raise OSError(f"{url}: expected {num_rows} rows at {start}, read {got}; did the input change after "
                      "planning?")
    try:
        table = pa.Table.from_arrays([pa.array(cells[c], TYPES[kinds[c]]) for c in want], names=want)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
        raise OSError(f"{url}: a value does not fit the column types found at planning ({exc}); did the "
                      "input change after planning?") from exc
    return TextRead(table, unreadable)
