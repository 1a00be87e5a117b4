"""Read-only snapshot of one run's output prefix (finished or in progress), for the HTML report.

Owns the tolerant reading of what the sink wrote (field names as documented in `pipeline.sink`):
`_plan.json`, `_job.json`, `_manifest.json`, `_SUCCESS`, the commit markers `_commits/shard-<id>.json` and
the data files they name. Like every reader of a run it
trusts only files named by a commit marker, so a zombie attempt's file never shows up in a report.
Optional fields may be missing (older runs, a run still planning): the snapshot then holds what it can
and lists what it could not read in `problems` instead of failing.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Output columns the report plots; others (text, passthrough) are never read, to keep memory small.
REPORT_COLUMNS = ("id", "status", "error", "num_tokens", "denoising_steps", "tokens_per_forward", "attempt",
                  "latency_s")
_SHARD_FROM_NAME = re.compile(r"shard-(?P<id>.+?)(?:\.attempt-(?P<attempt>\d+))?\.(?:json|parquet)$")


def first(d: dict[str, Any] | None, *names: str, default: Any = None) -> Any:
    """The value of the first of `names` present (and not None) in `d`: field names vary across versions."""
    if not d:
        return default
    for name in names:
        if d.get(name) is not None:
            return d[name]
    return default


@dataclass
class Commit:
    """One committed shard, as the report needs it."""

    shard: str
    attempt: int | None
    file: str | None  # path relative to the output prefix
    replica: str
    start: float | None  # unix seconds
    end: float | None
    busy_s: float | None  # replica seconds spent on this attempt
    rows: int | None
    raw: dict[str, Any]


@dataclass
class RunSnapshot:
    out_url: str
    plan: dict[str, Any] | None
    job: dict[str, Any] | None
    manifest: dict[str, Any] | None
    finished: bool
    commits: list[Commit]
    rows: pa.Table  # REPORT_COLUMNS present in the data, plus `shard` and `replica`
    problems: list[str] = field(default_factory=list)

    @property
    def planned_shards(self) -> int | None:
        shards = first(self.plan, "shards")
        if isinstance(shards, list):
            return len(shards)
        n = first(self.plan, "num_shards", "n_shards")
        return int(n) if n is not None else None

    @property
    def planned_rows(self) -> int | None:
        n = first(self.plan, "total_rows", "num_rows", "rows")
        if isinstance(n, int):
            return n
        shards = first(self.plan, "shards")
        if not isinstance(shards, list):
            return None
        total = 0
        for s in shards:
            rows = first(s, "num_rows", "rows", "n_rows")
            if rows is None and first(s, "row_end", "stop") is not None:
                rows = first(s, "row_end", "stop") - first(s, "row_start", "start", default=0)
            if rows is None:
                return None
            total += int(rows)
        return total

    @property
    def spec(self) -> dict[str, Any] | None:
        """The resolved job spec: `_job.json` ({"spec": ...}, or the bare spec), else a copy in the
        manifest or the plan."""
        if self.job is not None:
            return self.job.get("spec", self.job)
        return first(self.manifest, "job", "spec") or first(self.plan, "job", "spec")

    @property
    def model_info(self) -> dict[str, Any] | None:
        """What the run resolved the model to (path, and a label such as a random-weight fallback)."""
        info = first(self.job, "model") if self.job is not None and "spec" in self.job else None
        return info if isinstance(info, dict) else None


def _timestamp(value: Any) -> float | None:
    """Unix seconds from a number or an ISO 8601 string; None when absent or unreadable."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        import datetime as dt

        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parsed.timestamp()
    except ValueError:
        return None


def _read_json(fs: Any, path: str, problems: list[str]) -> dict[str, Any] | None:
    if not fs.exists(path):
        return None
    try:
        with fs.open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: unreadable JSON ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a JSON object, got {type(data).__name__}")
        return None
    return data


def _parse_commit(path: str, data: dict[str, Any]) -> Commit:
    m = _SHARD_FROM_NAME.search(posixpath.basename(path))
    shard = str(first(data, "shard_id", "shard", default=m.group("id") if m else posixpath.basename(path)))
    attempt = first(data, "attempt")
    file = first(data, "file", "data_file", "path", "data")
    if file is None and attempt is not None:
        file = f"data/shard-{shard}.attempt-{attempt}.parquet"
    rows = first(data, "rows", "num_rows", "n_rows")
    if isinstance(rows, dict):  # rows by status
        rows = sum(int(v) for v in rows.values())
    start = _timestamp(first(data, "started_at", "start", "start_ts", "start_time"))
    end = _timestamp(first(data, "finished_at", "end", "end_ts", "end_time", "committed_at"))
    busy = first(data, "duration_s")
    if busy is None and start is not None and end is not None:
        busy = max(0.0, end - start)
    return Commit(
        shard=shard,
        attempt=int(attempt) if attempt is not None else None,
        file=str(file) if file is not None else None,
        replica=str(first(data, "replica_id", "replica", "worker", default="?")),
        start=start,
        end=end,
        busy_s=float(busy) if busy is not None else None,
        rows=int(rows) if rows is not None else None,
        raw=data,
    )


def _read_rows(fs: Any, root: str, commit: Commit, problems: list[str]) -> pa.Table | None:
    if commit.file is None:
        problems.append(f"_commits/shard-{commit.shard}.json: names no data file")
        return None
    path = commit.file if commit.file.startswith(root) else posixpath.join(root, commit.file)
    try:
        schema = pq.read_schema(path, filesystem=fs)
        cols = [c for c in REPORT_COLUMNS if c in schema.names]
        table = pq.read_table(path, columns=cols, filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        problems.append(f"{commit.file}: unreadable data file ({exc})")
        return None
    n = table.num_rows
    table = table.append_column("shard", pa.array([commit.shard] * n, pa.string()))
    return table.append_column("replica", pa.array([commit.replica] * n, pa.string()))


def load_run(out_url: str, endpoint_url: str | None = None, options: dict[str, Any] | None = None
             ) -> RunSnapshot:
    """Snapshot of the run under `out_url` (local path or fsspec URL; S3 endpoint as in the job spec)."""
    from pipeline.storage import filesystem

    fs, root = filesystem(out_url, endpoint_url, options)
    root = root.rstrip("/")
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()  # s3fs caches listings: a live run's new markers would be missed
    if not fs.exists(root):
        raise FileNotFoundError(f"{out_url}: output prefix does not exist")
    problems: list[str] = []
    plan = _read_json(fs, f"{root}/_plan.json", problems)
    job = _read_json(fs, f"{root}/_job.json", problems)
    manifest = _read_json(fs, f"{root}/_manifest.json", problems)
    finished = fs.exists(f"{root}/_SUCCESS")

    commits: list[Commit] = []
    for path in sorted(fs.glob(f"{root}/_commits/*.json")):
        data = _read_json(fs, path, problems)
        if data is not None:
            commits.append(_parse_commit(path, data))
    tables = [t for c in commits if (t := _read_rows(fs, root, c, problems)) is not None]
    if tables:
        rows = pa.concat_tables(tables, promote_options="permissive")
    else:
        rows = pa.table({"shard": pa.array([], pa.string()), "replica": pa.array([], pa.string())})
    return RunSnapshot(out_url, plan, job, manifest, finished, commits, rows, problems)
