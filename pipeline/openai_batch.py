"""OpenAI's batch input format (`input.format: openai-batch`): one chat completion request per JSONL line.

A line is `{"custom_id", "method", "url", "body": {"messages", "max_tokens"?, "temperature"?, "seed"?, ...}}`
(https://platform.openai.com/docs/api-reference/batch/request-input). It is read like any JSONL file
(pipeline/text_inputs.py: the body arrives as its JSON text), and `request` maps one line to a row:
custom_id is the row id (pipeline/spec.py sets `id_column: custom_id`), `body.messages` the conversation
(pipeline/conversation.py), and `body.max_tokens` (or `max_completion_tokens`), `body.temperature`,
`body.seed` the row's settings (pipeline/row_settings.py). `body.model` is ignored: a job runs the one model
of its `model.path`. `method`, when given, must be POST and `url` /v1/chat/completions. A body key that would
change the generation and is not supported (`n: 2`, `tools`, `response_format`, ...) makes the line an error
row naming the key, as does a malformed conversation; the rest of the file is generated.
"""

from __future__ import annotations

from typing import Any

from pipeline.conversation import json_cell, parse_messages
from pipeline.row_settings import OPENAI_NAMES, from_mapping

COLUMNS = ("body", "custom_id", "method", "url")  # what a row reads; the first is the prompt's
OPTIONAL = ("method", "url")  # keys a line may leave out: their columns exist even when no line sets them
URL = "/v1/chat/completions"


def request(method: Any, url: Any, body: Any
            ) -> tuple[list[dict[str, str]] | None, dict[str, tuple[str, Any]], str | None]:
    """(conversation, settings as {name: (where, value)}, None) for one line, or (None, {}, what is wrong)."""
    if method is not None and method != "POST":
        return None, {}, f"method {method!r} is not supported (only POST)"
    if url is not None and url != URL:
        return None, {}, f"url {url!r} is not supported (only {URL})"
    if body is None:
        return None, {}, "body is missing"
    body, why = json_cell(body, "body", dict, "an object")
    if why:
        return None, {}, why
    if body.get("messages") is None:
        return None, {}, "body.messages is missing"
    given, why = from_mapping(body, "body", accept=OPENAI_NAMES, skip=("messages",))
    if why:
        return None, {}, why
    turns, why = parse_messages(body["messages"], "body.messages")
    if why:
        return None, {}, why
    return turns, given, None
