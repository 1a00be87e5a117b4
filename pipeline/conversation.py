"""Chat input: one row's conversation checked and normalised before it meets the chat template.

Owns what a conversation may be (`parse_messages`), the job-level system prompt (`with_system`) and how a
cell holding JSON is read (`decoded_cell`, `json_cell`: also for settings and request bodies). A
conversation is a list of turns `{"role", "content"}` in OpenAI's chat format, given as a list (a Parquet
list<struct> column, a JSON array) or as its JSON text (a CSV cell, a string column). The rules:

- a role is system, user or assistant; a system turn may only open the conversation;
- content is a string, or OpenAI content parts `[{"type": "text", "text": ...}]`, joined with "\\n" as vLLM
  joins them; any other part type (image_url, input_audio, ...) is refused;
- a turn has no other keys set (`name`, `tool_calls`, ...: the template has no place for them; a key
  whose value is null, as Parquet structs fill absent fields, counts as absent);
- the last turn is the user's (the generation prompt follows it) and is not blank; no text holds NUL.

A conversation that breaks a rule is that row's error, naming where: "conv[2].role 'bot' is not one of
system, user, assistant". The checkpoint's template (model/tokenizer.py `encode_messages`) renders the
turns that pass.
"""

from __future__ import annotations

import json
from typing import Any

ROLES = ("system", "user", "assistant")


def _content(value: Any, where: str) -> tuple[str | None, str | None]:
    """(text, problem) of one turn's content."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict):
                return None, f"{where}[{j}] is a {type(part).__name__}, not a content part"
            kind = part.get("type")
            if kind != "text":
                return None, f"{where}[{j}].type {kind!r} is not supported (only text parts)"
            if not isinstance(part.get("text"), str):
                return None, f"{where}[{j}].text is not a string"
            texts.append(part["text"])
        text = "\n".join(texts)
    elif value is None:
        return None, f"{where} is missing"
    else:
        return None, f"{where} is a {type(value).__name__}, not a string or a list of text parts"
    if "\x00" in text:
        return None, f"{where} contains a NUL character"
    return text, None


def decoded_cell(value: Any, where: str) -> tuple[Any, str | None]:
    """(the cell with bytes decoded as UTF-8, None), or (None, what is wrong) for null or non-UTF-8 bytes."""
    if value is None:
        return None, f"{where} is null"
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8"), None
        except UnicodeDecodeError as exc:
            return None, f"{where} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    return value, None


def parse_messages(value: Any, where: str) -> tuple[list[dict[str, str]] | None, str | None]:
    """(turns as [{"role", "content"}], None), or (None, what is wrong) naming `where` (e.g. the column)."""
    value, problem = json_cell(value, where, list, "a list of turns")
    if problem is not None:
        return None, problem
    if not value:
        return None, f"{where} is empty"
    turns: list[dict[str, str]] = []
    for i, turn in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(turn, dict):
            return None, f"{at} is a {type(turn).__name__}, not a {{role, content}} object"
        extra = sorted(str(k) for k, v in turn.items() if k not in ("role", "content") and v is not None)
        if extra:
            return None, f"{at} has {', '.join(map(repr, extra))}: only role and content are supported"
        role = turn.get("role")
        if role not in ROLES:
            return None, f"{at}.role {role!r} is not one of {', '.join(ROLES)}"
        if role == "system" and i > 0:
            return None, f"{at}.role 'system' is only allowed as the first turn"
        text, why = _content(turn.get("content"), f"{at}.content")
        if why:
            return None, why
        turns.append({"role": role, "content": text})
    if turns[-1]["role"] != "user":
        return None, (f"{where}[{len(turns) - 1}].role is {turns[-1]['role']!r}: the last turn must be the "
                      "user's (the model answers it)")
    if not turns[-1]["content"].strip():
        return None, f"{where}[{len(turns) - 1}].content is empty"
    return turns, None


def with_system(turns: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """`turns` opened by a `system` turn, unless there is no system prompt or the conversation has one."""
    if system is None or turns[0]["role"] == "system":
        return turns
    return [{"role": "system", "content": system}, *turns]


def json_cell(value: Any, where: str, want: type, noun: str) -> tuple[Any, str | None]:
    """(the cell's value, None) when it is a `want` (a list, a dict) given as a Parquet list/struct/map, as
    JSON text or as UTF-8 bytes of JSON text; else (None, what is wrong, naming `where`, calling a `want`
    the `noun`)."""
    value, problem = decoded_cell(value, where)
    if problem is not None:
        return None, problem
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            return None, f"{where} is text that is not JSON ({exc})"
    if not isinstance(value, want):
        return None, f"{where} is a {type(value).__name__}, not {noun}"
    return value, None
