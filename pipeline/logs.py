"""Structured JSON-lines logs for replicas and the driver: one object per line, context in every line.

Owns the log line format. Every line carries `ts` (UTC, ISO 8601), `level`, `msg`, `replica`, `shard` and
`attempt` (null until bound), plus any `extra=` fields of the call, so `grep '"shard": "s00012"'` or `jq`
over a replica's log answers "what happened to this shard". Lines go to stderr by default, which Ray
captures per worker (`/tmp/ray/session_latest/logs/worker-*.err`) and echoes to the driver; pass `path=`
(or set DGBATCH_LOG_DIR) to also append to a file per replica.

    log = get_logger("r1")                    # replica-level lines: shard/attempt are null
    slog = log.bind(shard="s00012", attempt=2)
    slog.info("shard done", extra={"rows": 250, "tokens_per_s": 812.5})

Logs must never hold a secret: fields whose names look like credentials are replaced by "***", and every
string of the line (message, fields, traceback) is scrubbed of secret-shaped text (`pipeline.redact`), so
an exception message quoting a signed URL or an `Authorization:` header is logged redacted.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import sys
from typing import Any

from pipeline.redact import scrub_json

_CONTEXT_KEYS = ("replica", "shard", "attempt")
_SECRET_KEY = re.compile(r"secret|passw|credential|access_key|session_token|auth_token|api_key", re.I)
# LogRecord attributes that are not user fields (the formatter must not echo them).
_RECORD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "dg_fields"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return str(value)


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    """Copy of `fields` with values of credential-like keys replaced by "***" (recursively)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if _SECRET_KEY.search(str(key)):
            out[key] = "***"
        elif isinstance(value, dict):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; context and extra fields come from the adapter."""

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "dg_fields", {}))
        # Plain `logger.info(..., extra={...})` on the underlying logger also lands on the record.
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in fields:
                fields[key] = value
        ts = _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc)
        line: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        for key in _CONTEXT_KEYS:
            line[key] = fields.pop(key, None)
        line.update(redact(fields))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # Scrubbed as data, before encoding: a redaction can then never break the JSON.
        return json.dumps(scrub_json(_jsonable(line)), ensure_ascii=False)


class BoundLogger(logging.LoggerAdapter):
    """A logger adapter holding context fields; `bind()` returns a new one with more fields."""

    def __init__(self, logger: logging.Logger, context: dict[str, Any]) -> None:
        super().__init__(logger, dict(context))

    def bind(self, **fields: Any) -> BoundLogger:
        """A child logger whose lines also carry `fields` (e.g. shard=..., attempt=...)."""
        return BoundLogger(self.logger, {**self.extra, **fields})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        # The default adapter replaces the call's extra with its own; we merge (call fields win).
        call_fields = kwargs.get("extra") or {}
        kwargs["extra"] = {"dg_fields": {**self.extra, **call_fields}}
        return msg, kwargs


def _handler_for(stream_or_path: Any) -> logging.Handler:
    if isinstance(stream_or_path, (str, os.PathLike)):
        handler: logging.Handler = logging.FileHandler(stream_or_path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream_or_path)
    handler.setFormatter(JsonFormatter())
    return handler


def get_logger(replica_id: str | int, *, path: str | os.PathLike | None = None, stream: Any = None,
               level: int = logging.INFO) -> BoundLogger:
    """The JSON-lines logger of one replica (or "driver"), with `replica` set in every line.

    `stream` defaults to stderr; `path` (or `$DGBATCH_LOG_DIR/replica-<id>.jsonl`) adds a file.
    Calling again with the same replica id reuses the logger and replaces its handlers, so an
    actor restarted in the same worker process does not print every line twice.
    """
    logger = logging.getLogger(f"dgbatch.replica.{replica_id}")
    logger.setLevel(level)
    logger.propagate = False  # the root logger's plain-text handlers would duplicate each line
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.addHandler(_handler_for(stream if stream is not None else sys.stderr))
    log_dir = os.environ.get("DGBATCH_LOG_DIR")
    if path is None and log_dir:
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.join(log_dir, f"replica-{replica_id}.jsonl")
    if path is not None:
        logger.addHandler(_handler_for(path))
    return BoundLogger(logger, {"replica": str(replica_id)})
