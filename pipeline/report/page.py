"""The run report: `write_report(OUT)` writes `OUT/_report/index.html` and its PNG charts.

Owns what the report says about a run: progress, rows by status, tokens, throughput over time,
tokens-per-forward and denoising-step distributions, errors grouped by kind, per-replica rows/s, and the
resolved job spec and manifest. It reads through `pipeline.report.data` (commit markers and the data files
they name), so it works on a finished run and on one still in progress (no `_manifest.json` or `_SUCCESS`
yet), and it can be rerun at any time: each run overwrites the previous report.

Nothing secret reaches the page: every string taken from the run (spec, manifest, plan, error messages,
problems, URLs) is scrubbed by `pipeline.redact` before it is escaped (escaping would hide a signed URL's
`&sig=` from the patterns), and the finished page is scrubbed once more.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from pipeline.prefix import CHARTS
from pipeline.redact import scrub, scrub_json
from pipeline.report import plots
from pipeline.report.data import RunSnapshot, first, load_run

REPORT_DIR = "_report"
_MAX_LIST = 20  # long lists in the manifest/spec (files, shards) are cut to this many items
_MAX_SHARD_LINES = 200
# Histograms of a 10M-row run use an even subsample: the shape is the same, the page stays fast.
_MAX_HIST_POINTS = 200_000


def error_kind(message: str) -> str:
    """A stable group key for an error message: its `Kind:` prefix, else the message with numbers and
    quoted values masked, so 'prompt of 9000 tokens' and 'prompt of 12000 tokens' group together."""
    msg = (message or "").strip().splitlines()[0] if (message or "").strip() else "(empty message)"
    m = re.match(r"^([A-Za-z_][\w.]*)\s*:", msg)
    if m:
        return m.group(1)
    masked = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    masked = re.sub(r"\d+(\.\d+)?", "N", masked)
    return masked[:80]


def _col(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist() if name in table.column_names else []


def _sample(values: list[Any]) -> list[Any]:
    step = max(1, -(-len(values) // _MAX_HIST_POINTS))
    return values[::step]


def _status_order(counts: Counter) -> list[str]:
    """ok, invalid, error first (in that order), then anything unexpected."""
    known = list(plots.STATUS_COLOURS)
    return sorted(counts, key=lambda s: (known.index(s) if s in known else len(known), s))


def _stats(snap: RunSnapshot) -> dict[str, Any]:
    """Numbers the page shows, computed from committed rows and commit markers."""
    rows = snap.rows
    status: Counter = Counter()
    if "status" in rows.column_names:  # counted in Arrow: no Python object per row
        for item in pc.value_counts(rows.column("status")).to_pylist():
            status[item["values"] or "?"] += item["counts"]
    tokens = int(pc.sum(rows.column("num_tokens")).as_py() or 0) if "num_tokens" in rows.column_names else 0
    starts = [c.start for c in snap.commits if c.start is not None]
    ends = [c.end for c in snap.commits if c.end is not None]
    t0 = min(starts + ends) if (starts or ends) else None
    wall = (max(ends) - t0) if ends and t0 is not None else None
    per_replica: dict[str, dict[str, float]] = defaultdict(lambda: {"rows": 0, "shards": 0, "busy_s": 0.0})
    rows_by_shard = _rows_by_shard(snap)
    for c in snap.commits:
        r = per_replica[c.replica]
        r["rows"] += c.rows if c.rows is not None else rows_by_shard.get(c.shard, 0)
        r["shards"] += 1
        r["busy_s"] += c.busy_s or 0.0
    return {"status": status, "rows": rows.num_rows, "tokens": tokens, "t0": t0, "wall_s": wall,
            "t_last": max(ends) if ends else None,
            "per_replica": dict(sorted(per_replica.items()))}


def _rows_by_shard(snap: RunSnapshot) -> dict[str, int]:
    if snap.rows.num_rows == 0:
        return {}
    return {i["values"]: i["counts"] for i in pc.value_counts(snap.rows.column("shard")).to_pylist()}


def _errors(snap: RunSnapshot) -> list[dict[str, Any]]:
    """Non-ok rows grouped by error kind, largest group first."""
    groups: dict[str, dict[str, Any]] = {}
    if "status" not in snap.rows.column_names:
        return []
    bad = snap.rows.filter(pc.fill_null(pc.not_equal(snap.rows.column("status"), "ok"), True))
    n = bad.num_rows
    ids, errs = _col(bad, "id") or [None] * n, _col(bad, "error") or [None] * n
    for rid, st, err in zip(ids, _col(bad, "status"), errs):
        err = scrub(err) if err else err  # grouped, charted and quoted: scrubbed before any of that
        rid = scrub(rid) if isinstance(rid, str) else rid
        kind = error_kind(err or "")
        g = groups.setdefault(kind, {"kind": kind, "count": 0, "status": Counter(), "example": err or "",
                                     "example_id": rid})
        g["count"] += 1
        g["status"][st] += 1
    return sorted(groups.values(), key=lambda g: -g["count"])


def _abbreviate(obj: Any) -> Any:
    """The object with lists longer than _MAX_LIST cut (a manifest can list thousands of files)."""
    if isinstance(obj, dict):
        return {k: _abbreviate(v) for k, v in obj.items()}
    if isinstance(obj, list):
        head = [_abbreviate(v) for v in obj[:_MAX_LIST]]
        return head + ([f"... {len(obj) - _MAX_LIST} more"] if len(obj) > _MAX_LIST else [])
    return obj


def _charts(snap: RunSnapshot, st: dict[str, Any]) -> dict[str, bytes]:
    """PNG name -> bytes, for each chart that has data."""
    out: dict[str, bytes] = {}
    if st["status"]:
        labels = _status_order(st["status"])
        colours = [plots.STATUS_COLOURS.get(s, "#546e7a") for s in labels]
        out["status_counts.png"] = plots.bars(labels, [st["status"][s] for s in labels], "Rows by status",
                                              "rows", colours)
    timed = [c for c in snap.commits if c.end is not None]
    if timed and st["t0"] is not None:
        rows_by_shard = _rows_by_shard(snap)
        out["throughput.png"] = plots.throughput(
            [c.end - st["t0"] for c in timed],
            [c.rows if c.rows is not None else rows_by_shard.get(c.shard, 0) for c in timed])
    # Error rows never ran (or ran partly): their zeros would only pile up at the left edge.
    gen = snap.rows
    if "status" in gen.column_names:
        gen = gen.filter(pc.fill_null(pc.not_equal(gen.column("status"), "error"), True))
    for name, title, xlabel, integer in (
        ("tokens_per_forward", "Tokens committed per forward pass", "tokens per forward", False),
        ("denoising_steps", "Denoising steps per row", "steps", True),
        ("latency_s", "Latency per row", "seconds", False),
    ):
        vals = _sample([v for v in _col(gen, name) if v is not None])
        if vals:
            out[f"{name}.png"] = plots.histogram(vals, title, xlabel, integer)
    rate = {k: v["rows"] / v["busy_s"] for k, v in st["per_replica"].items() if v["busy_s"] > 0}
    if rate:
        out["per_replica.png"] = plots.bars(list(rate), list(rate.values()), "Rows/s per replica (busy time)",
                                            "rows/s", fmt="{:,.2f}")
    errs = _errors(snap)[:12]
    if errs:
        # Coloured by the group's most common status: invalid (orange) vs error (red) at a glance.
        colours = [plots.STATUS_COLOURS.get(g["status"].most_common(1)[0][0], "#546e7a") for g in errs]
        out["errors.png"] = plots.bars([g["kind"] for g in errs], [g["count"] for g in errs],
                                       "Non-ok rows by error kind", "rows", colours)
    return out


def _when(ts: float | None) -> str:
    if ts is None:
        return "n/a"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    thead = f"<thead><tr>{th}</tr></thead>" if head else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _runs_table(manifest: dict[str, Any] | None) -> str:
    """One line per driver run (the manifest's `runs`): a resumed job shows what each run did."""
    runs = (manifest or {}).get("runs")
    if not runs:
        return "<p class='muted'>No per-run records (the job has not finished, or predates them).</p>"
    rows = [[r.get("run_id"), r.get("outcome"), _when(r.get("started_at")), f"{r.get('wall_s', 0):.1f}",
             r.get("rows"), r.get("tokens"), r.get("retries"), r.get("replica_restarts"),
             scrub(str(r.get("error") or ""))[:200]] for r in runs]
    return _table(["run", "outcome", "started", "wall s", "rows", "tokens", "retries", "replica restarts",
                   "error"], rows)


def _img(charts: dict[str, bytes], name: str, alt: str) -> str:
    return f'<figure><img src="{name}" alt="{html.escape(alt)}"></figure>' if name in charts else ""


def _data_block(title: str, obj: Any, missing: str) -> str:
    """`obj` as YAML (the job spec's own format; shorter than indented JSON) under a heading."""
    if obj is None:
        return f"<h2>{title}</h2><pre>{missing}</pre>"
    data = scrub_json(json.loads(json.dumps(_abbreviate(obj), default=str)))
    text = yaml.safe_dump(data, sort_keys=False, width=100)
    return f"<h2>{title}</h2><pre>{html.escape(text)}</pre>"


def _shard_rows(snap: RunSnapshot) -> list[list[Any]]:
    """One line per planned shard (committed or pending), cut to _MAX_SHARD_LINES."""
    by_id = {c.shard: c for c in snap.commits}
    planned = first(snap.plan, "shards", default=[]) or []
    ids = [str(first(s, "id", "shard", "shard_id", default=i)) if isinstance(s, dict) else str(s)
           for i, s in enumerate(planned)]
    ids += sorted(set(by_id) - set(ids))  # markers for shards the plan does not list: show them too
    out = []
    for sid in ids[:_MAX_SHARD_LINES]:
        c = by_id.get(sid)
        secs = f"{c.busy_s:.1f}" if c and c.busy_s is not None else ""
        out.append([sid, "committed" if c else "pending", c.attempt if c and c.attempt is not None else "",
                    c.replica if c else "", c.rows if c and c.rows is not None else "", secs])
    if len(ids) > _MAX_SHARD_LINES:
        out.append([f"... {len(ids) - _MAX_SHARD_LINES} more", "", "", "", "", ""])
    return out


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1320px;color:#222;
padding:0 16px}
h1{margin-bottom:4px}h2{margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.state{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.done{background:#2e7d32}.running{background:#1565c0}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:left;
vertical-align:top}th{background:#f5f5f5}td.num{text-align:right}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:12px}
figure{margin:0}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:10px;overflow:auto;max-height:480px;font-size:12px}.muted{color:#777}
.problems{color:#c62828}"""


def render_html(snap: RunSnapshot, st: dict[str, Any], charts: dict[str, bytes]) -> str:
    """The page; image names in `charts` are referenced relative to the report directory."""
    planned_shards, planned_rows = snap.planned_shards, snap.planned_rows
    state = "finished" if snap.finished else "in progress"
    shards_txt = f"{len(snap.commits)}" + (f" of {planned_shards}" if planned_shards is not None else "")
    rows_txt = f"{st['rows']:,}" + (f" of {planned_rows:,}" if planned_rows is not None else "")
    wall, rows = st["wall_s"], st["rows"]
    summary = [
        ["state", state], ["shards committed", shards_txt], ["rows committed", rows_txt],
        *[[f"rows {k}", f"{st['status'][k]:,} ({100 * st['status'][k] / max(rows, 1):.1f}%)"]
          for k in _status_order(st["status"])],
        ["tokens generated", f"{st['tokens']:,}"],
        ["first shard started", _when(st["t0"])],
        ["last shard committed", _when(st["t_last"])],
        # Measured from commit markers, so it excludes start-up (model load) and spans resumed runs.
        ["shard span (first start to last commit)", f"{wall:,.1f} s" if wall is not None else "n/a"],
        ["rows/s over the shard span", f"{rows / wall:,.2f}" if wall else "n/a"],
        ["tokens/s over the shard span", f"{st['tokens'] / wall:,.1f}" if wall else "n/a"],
        ["replicas seen", str(len(st["per_replica"]))],
    ]
    model = snap.model_info
    if model:
        label = f" ({model['label']})" if model.get("label") else ""
        summary.insert(1, ["model", scrub(f"{model.get('path', '?')}{label}")])
    if snap.manifest:  # the drivers' own accounting, totals across every run (pipeline/runs.py)
        for key in ("valid_pct", "replica_seconds", "wall_s", "rows_per_s", "tokens_per_s", "retries",
                    "replica_restarts"):
            if key in snap.manifest:
                summary.append([f"manifest: {key}", str(snap.manifest[key])])  # numbers
        if isinstance(snap.manifest.get("finished_at"), (int, float)):
            summary.append(["manifest: finished_at", _when(snap.manifest["finished_at"])])
    replicas = [[k, int(v["rows"]), int(v["shards"]), f"{v['busy_s']:.1f}",
                 f"{v['rows'] / v['busy_s']:.2f}" if v["busy_s"] > 0 else "n/a"]
                for k, v in st["per_replica"].items()]
    errs = _errors(snap)
    err_rows = [[g["kind"], g["count"], ", ".join(f"{k}: {v}" for k, v in g["status"].items()),
                 g["example_id"], g["example"][:300]] for g in errs]
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    out_url = html.escape(scrub(snap.out_url))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>dgbatch report: {out_url}"
        f"</title><style>{_CSS}</style></head><body>",
        f"<h1>dgbatch run report</h1><p class='muted'>{out_url} &middot; generated {generated}</p>",
        f"<p><span class='state {'done' if snap.finished else 'running'}'>{state}</span></p>",
        "<h2>Summary</h2>", _table([], summary),
    ]
    if snap.problems:
        items = "".join(f"<li>{html.escape(scrub(p))}</li>" for p in snap.problems)
        parts.append(f"<h2>Problems reading the run</h2><ul class='problems'>{items}</ul>")
    parts += [
        "<h2>Progress and status</h2><div class='grid'>",
        _img(charts, "throughput.png", "throughput over time"),
        _img(charts, "status_counts.png", "status counts"),
        "</div>",
    ]
    if not snap.commits:
        parts.append("<p class='muted'>No shard committed yet.</p>")
    parts += [
        "<h2>Generation</h2><div class='grid'>",
        _img(charts, "tokens_per_forward.png", "tokens per forward histogram"),
        _img(charts, "denoising_steps.png", "denoising steps histogram"),
        _img(charts, "latency_s.png", "latency histogram"), "</div>",
        "<h2>Errors by kind</h2>",
        (_img(charts, "errors.png", "errors by kind")
         + _table(["kind", "rows", "status", "example id", "example message"], err_rows))
        if errs else "<p class='muted'>No invalid or error rows.</p>",
        "<h2>Runs</h2>", _runs_table(snap.manifest),
        "<h2>Replicas</h2>", _img(charts, "per_replica.png", "rows per second per replica"),
        _table(["replica", "rows", "shards", "busy s", "rows/s"], replicas) if replicas else "",
        _data_block("Resolved job spec", snap.spec, "<span class='muted'>not written yet</span>"),
        _data_block("Manifest", snap.manifest, "<span class='muted'>no _manifest.json yet: the run is in "
                    "progress or was interrupted (rerun the same command to resume)</span>"),
        _data_block("Plan", {k: v for k, v in (snap.plan or {}).items() if k not in ("job", "spec", "shards")}
                    or None, "<span class='muted'>no _plan.json</span>"),
        "<h2>Shards</h2>",
        _table(["shard", "state", "attempt", "replica", "rows", "seconds"], _shard_rows(snap)),
        "</body></html>",
    ]
    return scrub("\n".join(parts))


def write_report(out_url: str, endpoint_url: str | None = None, options: dict[str, Any] | None = None,
                 report_dir: str | None = None) -> str:
    """Write the report for the run under `out_url`; returns the path/URL of index.html.

    The report goes to `OUT/_report/` (any fsspec URL) unless `report_dir` names another place.
    `endpoint_url`/`options` are the job spec's `storage` settings, for S3-compatible stores.
    """
    from pipeline.storage import filesystem

    snap = load_run(out_url, endpoint_url, options)
    st = _stats(snap)
    charts = _charts(snap, st)
    target = report_dir or f"{out_url.rstrip('/')}/{REPORT_DIR}"
    fs, root = filesystem(target, endpoint_url, options)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    for name in CHARTS:  # a chart that has no data this time must not linger (only our chart names)
        if f"{name}.png" not in charts and fs.exists(f"{root}/{name}.png"):
            fs.rm_file(f"{root}/{name}.png")
    for name, data in charts.items():
        fs.pipe_file(f"{root}/{name}", data)
    index = f"{root}/index.html"
    fs.pipe_file(index, render_html(snap, st, charts).encode("utf-8"))
    return index if "://" not in target else f"{target.rstrip('/')}/index.html"


