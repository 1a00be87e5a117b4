"""Post-generation check of constrained text, independent of the automaton that produced it.

json_schema / schema_column: json.loads + jsonschema (with format checking); pydantic: the model itself;
regex: Python's `re.fullmatch` (or the byte automaton when Python cannot parse the pattern); choice: the
text is one of the labels. The generator guarantees validity, so a failure here is a bug, not a user error.
"""

from __future__ import annotations

import json
import re

from constraints.schema_regex import load_pydantic, strict_validator


def section_kind(section: dict) -> str:
    """The one constraint kind a structured_output section names (clear error otherwise)."""
    kinds = [k for k in ("json_schema", "pydantic", "regex", "choice", "schema_column") if k in section]
    if len(kinds) != 1:
        raise ValueError(
            "structured_output: expected exactly one of json_schema, pydantic, regex, choice, schema_column; "
            f"got {sorted(section)}"
        )
    return kinds[0]


def row_schema(section: dict, row: dict | None) -> dict:
    """The JSON Schema of this row for a schema_column section (a dict or a JSON string in the column)."""
    col = section["schema_column"]
    if row is None or col not in row:
        raise ValueError(f"structured_output.schema_column: row has no column {col!r}")
    value = row[col]
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"structured_output.schema_column {col!r}: not valid JSON ({e})") from None
    if not isinstance(value, (dict, bool)):
        raise ValueError(f"structured_output.schema_column {col!r}: expected a JSON Schema object")
    return value


def validate_output(
    section: dict, text: str, row: dict | None = None
) -> tuple[bool, object | None, str | None]:
    """(ok, parsed JSON or None, error message or None) for `text` under the section's constraint."""
    kind = section_kind(section)
    try:
        if kind == "choice":
            ok = text in section["choice"]
            return ok, None, None if ok else f"{text!r} is not one of the choices"
        if kind == "regex":
            return _check_regex(section["regex"], text)
        if kind == "pydantic":
            model = load_pydantic(section["pydantic"])
            obj = model.model_validate_json(text)
            return True, obj.model_dump(mode="json"), None
        schema = section["json_schema"] if kind == "json_schema" else row_schema(section, row)
        parsed = json.loads(text)
        validator = strict_validator(schema)
        errors = sorted(validator.iter_errors(parsed), key=lambda e: list(e.path))
        if errors:
            return False, None, f"{'/'.join(map(str, errors[0].path)) or '<root>'}: {errors[0].message}"
        return True, parsed, None
    except (ValueError, TypeError) as e:  # json / pydantic errors are ValueErrors
        return False, None, f"{type(e).__name__}: {e}"


def _check_regex(pattern: str, text: str) -> tuple[bool, None, str | None]:
    try:
        ok = re.fullmatch(pattern, text) is not None
    except re.error:  # Rust-only syntax: fall back to the byte automaton
        from constraints.dfa import byte_dfa

        delta, final = byte_dfa(pattern)
        q = 0
        for b in text.encode("utf-8"):
            q = int(delta[q, b])
            if q >= final.size:
                break
        ok = q < final.size and bool(final[q])
    return ok, None, None if ok else f"text does not fully match the regex {pattern!r}"
