"""`dgbatch export OUT`: a run's committed rows as JSON Lines, for tools that do not read Parquet.

Reads only: the rows of data files that a commit marker names (pipeline/sink.py), in plan order, from a
finished run or one still in progress (then only what is committed so far). A prefix without `_plan.json`
is not a dgbatch run and is refused. It writes only DEST (default stdout), never under OUT, and refuses a
DEST inside OUT, equal to the input, or inside an input directory (where the next listing would read it).
Rows stream through one Parquet batch at a time (`ExportConfig.batch_rows`); one committed file's bytes
(one shard, `resources.shard_rows` rows) is the most held at once. A DEST file appears only complete:
it is written uncommitted and committed at the end (fsspec `autocommit=False`), discarded on failure.

Formats, one JSON object per line:
- `jsonl`: every output column (pipeline/outputs.py) under its name, as JSON-native values: strings,
  numbers, booleans and null as they are; NaN and infinities as null (JSON has neither); binary as
  UTF-8 text when it decodes, else base64; timestamps, dates and times as ISO 8601 text; durations as
  seconds; decimals as text (exact); lists, structs and maps as arrays and objects. The `json` column of
  structured output stays the JSON text it holds.
- `openai-batch`: the per-line shape of an OpenAI Batch API output file
  (https://platform.openai.com/docs/api-reference/batch/request-output):
  `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`, with `body` a
  `chat.completion`. Filled: `custom_id` the row id as text; `id` `batch_req_<h>`, `request_id`
  `req_<h>` and the body's `id` `chatcmpl-<h>`, <h> a hash of the plan fingerprint and row id (stable
  across exports); `status_code` 200; `created` the committing attempt's finish time (unix seconds);
  `model` the spec's `model.path`, else the model label in `_job.json`; one choice, `index` 0, `message`
  {"role": "assistant", "content": the row's text}, `logprobs` null, `finish_reason` "stop";
  `usage.completion_tokens` the row's `num_tokens`. Left out: `usage.prompt_tokens` and
  `total_tokens` (the output rows do not record the prompt's length), `system_fingerprint`, and a
  "length" finish reason (the rows do not record whether max_new_tokens cut generation). An `error` row
  has `response` null and `error` {"code": "row_error", "message": its error}. An `invalid` row (text
  made, structured-output check failed) has both its `response` and `error` {"code": "invalid_output",
  "message": why}. `ok` rows have `error` null. With `generation.n` > 1 there is one line per sample (the
  flat layout of the Parquet output): `custom_id` repeats, the choice's `index` is the row's
  `sample_index`, and <h> also hashes the sample index (sample 0's is the n = 1 value).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow.parquet as pq

from pipeline.plan import PLAN_FILE
from pipeline.prefix import input_root
from pipeline.sink import JOB, SUCCESS, committed
from pipeline.storage import Storage, filesystem, with_retries

FORMATS = ("jsonl", "openai-batch")


class ExportError(Exception):
    """The export is refused before anything is written (not a dgbatch run, a DEST that must not be
    written). The message names the URL."""


@dataclass(frozen=True)
class ExportConfig:
    out: str  # the run's output prefix
    format: str = "jsonl"
    dest: str | None = None  # a local path or fsspec URL; None: the `stream` given to `export`
    endpoint_url: str | None = None  # S3-compatible endpoint, for OUT and DEST
    batch_rows: int = 1024  # rows converted at once

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {self.batch_rows}")


@dataclass
class Run:
    """What export needs of a run: its storage, plan, committed markers in plan order, and its records."""

    storage: Storage
    plan: dict[str, Any]
    markers: list[dict[str, Any]]
    finished: bool
    job: dict[str, Any] | None  # _job.json, absent when a driver died before writing it


def open_run(out: str, endpoint_url: str | None = None) -> Run:
    """The run under `out`, read-only; ExportError if `out` holds no dgbatch run."""
    storage = Storage(out, endpoint_url)
    storage.invalidate()
    if not storage.exists(PLAN_FILE):
        raise ExportError(f"{out}: not a dgbatch output prefix (no {PLAN_FILE}); export reads the results "
                          "of a dgbatch run, finished or in progress")
    plan = json.loads(storage.read_bytes(PLAN_FILE))
    order = {s["id"]: i for i, s in enumerate(plan["shards"])}
    commits = committed(storage)
    markers = [commits[s] for s in sorted(commits, key=lambda s: (order.get(s, len(order)), s))]
    job = json.loads(storage.read_bytes(JOB)) if storage.exists(JOB) else None
    return Run(storage, plan, markers, storage.exists(SUCCESS), job)


def iter_rows(run: Run, batch_rows: int = 1024) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(row, its commit marker) for every committed row, in plan order, one file and batch at a time."""
    for marker in run.markers:
        data = run.storage.read_bytes(marker["file"])
        for batch in pq.ParquetFile(io.BytesIO(data)).iter_batches(batch_size=batch_rows):
            for row in batch.to_pylist():
                yield row, marker
        del data


def json_value(value: Any) -> Any:
    """`value` (as Arrow's to_pylist gives it) as a JSON-native value (the module docstring's rules)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):  # an Arrow map's pairs
            return {str(json_value(k)): json_value(v) for k, v in value}
        return [json_value(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def jsonl_record(row: dict[str, Any]) -> dict[str, Any]:
    return {k: json_value(v) for k, v in row.items()}


def openai_record(row: dict[str, Any], marker: dict[str, Any], *, fingerprint: str, model: str
                  ) -> dict[str, Any]:
    """One OpenAI Batch API output line for one output row (the module docstring says what is filled)."""
    custom_id = str(json_value(row["id"]))
    sample = int(row.get("sample_index") or 0)
    key = f"{fingerprint}\x1f{custom_id}" + (f"\x1f{sample}" if sample else "")
    h = hashlib.sha256(key.encode()).hexdigest()[:24]
    line: dict[str, Any] = {"id": f"batch_req_{h}", "custom_id": custom_id, "response": None, "error": None}
    if row["status"] == "error":
        line["error"] = {"code": "row_error", "message": row["error"]}
        return line
    body = {"id": f"chatcmpl-{h}", "object": "chat.completion",
            "created": int(marker.get("finished_at") or 0), "model": model,
            "choices": [{"index": sample, "message": {"role": "assistant", "content": row["text"]},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"completion_tokens": row["num_tokens"]}}
    line["response"] = {"status_code": 200, "request_id": f"req_{h}", "body": body}
    if row["status"] == "invalid":
        line["error"] = {"code": "invalid_output", "message": row["error"]}
    return line


def _location(url: str, endpoint_url: str | None) -> tuple[str, str]:
    """(store, absolute path) of a URL, to compare DEST with OUT and the input (local paths resolved)."""
    fs, path = filesystem(url, endpoint_url)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" in protocols or "local" in protocols:
        return "file", os.path.realpath(path)
    return ("s3" if {"s3", "s3a"} & set(protocols) else protocols[0]), "/" + path.strip("/")


def _within(child: tuple[str, str], parent: tuple[str, str]) -> bool:
    c, p = child[1].rstrip("/"), parent[1].rstrip("/")
    return child[0] == parent[0] and (c == p or c.startswith(p + "/"))


def check_dest(dest: str, run: Run, endpoint_url: str | None = None) -> None:
    """ExportError if writing `dest` could touch the run: inside OUT, the input itself, or inside an input
    directory (a later listing of the input would read the export as input)."""
    where = _location(dest, endpoint_url)
    if _within(where, _location(run.storage.url, endpoint_url)):
        raise ExportError(f"--to {dest}: lies inside the output prefix {run.storage.url}; export never "
                          "writes there. Choose a destination outside it")
    inp = run.plan.get("input")
    if not inp:
        return
    if where == _location(inp, endpoint_url):
        raise ExportError(f"--to {dest}: is the job's input {inp}; choose another destination")
    root = input_root(inp)
    if root is None:
        fs, path = filesystem(inp, endpoint_url)
        root = inp if with_retries(lambda: fs.isdir(path), what=inp) else None
    if root is not None and _within(where, _location(root, endpoint_url)):
        raise ExportError(f"--to {dest}: lies inside the input {inp}, where the job's next listing would "
                          "read it as input; choose a destination outside it")


def _records(run: Run, cfg: ExportConfig) -> Iterator[dict[str, Any]]:
    if cfg.format == "jsonl":
        for row, _ in iter_rows(run, cfg.batch_rows):
            yield jsonl_record(row)
        return
    job = run.job or {}
    model = (job.get("spec", {}).get("model") or {}).get("path") or \
        (job.get("model") or {}).get("label") or "dgbatch"
    for row, marker in iter_rows(run, cfg.batch_rows):
        yield openai_record(row, marker, fingerprint=run.plan["fingerprint"], model=model)


def _write_lines(run: Run, cfg: ExportConfig, out: IO[bytes]) -> int:
    n, buf = 0, []
    for record in _records(run, cfg):
        buf.append(json.dumps(record, ensure_ascii=False, allow_nan=False))
        n += 1
        if len(buf) >= cfg.batch_rows:
            out.write(("\n".join(buf) + "\n").encode())
            buf = []
    if buf:
        out.write(("\n".join(buf) + "\n").encode())
    return n


def export(cfg: ExportConfig, stream: IO[bytes] | None = None) -> dict[str, Any]:
    """Export the run under `cfg.out` to `cfg.dest` (or to `stream`, a binary file, when dest is None).

    Returns {"rows", "shards_committed", "shards", "finished", "dest"}. Raises ExportError (nothing
    written) for a prefix that holds no run or a destination that must not be written."""
    run = open_run(cfg.out, cfg.endpoint_url)
    if cfg.dest is not None:
        check_dest(cfg.dest, run, cfg.endpoint_url)
        fs, path = filesystem(cfg.dest, cfg.endpoint_url)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol) and parent:
            os.makedirs(parent, exist_ok=True)
        f = fs.open(path, "wb", autocommit=False)
        try:
            rows = _write_lines(run, cfg, f)
            f.close()
            f.commit()
        except BaseException:
            f.close()
            f.discard()
            raise
    else:
        if stream is None:
            raise ValueError("export: no dest and no stream to write to")
        rows = _write_lines(run, cfg, stream)
    return {"rows": rows, "shards_committed": len(run.markers), "shards": len(run.plan["shards"]),
            "finished": run.finished, "dest": cfg.dest}
