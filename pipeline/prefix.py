"""Which files under an output prefix are ours, and the checks that make a prefix safe to use.

The rule (stated once, used by `dgbatch validate`, by `run_job` before any work, and by every delete):
a job may create, overwrite or delete only names that its own layout (pipeline/sink.py) could have
written. Those are, relative to the prefix OUT:

  _plan.json  _job.json  _manifest.json  _SUCCESS            the job's records
  _probe-<32 hex>                                           the writability probe (deleted at once)
  _commits/shard-<id>.json   data/shard-<id>.attempt-<k>.parquet   commits and attempt files
  _runs/run-<run id>.json                                   one record per driver run (pipeline/runs.py)
  _report/index.html  _report/<chart>.png                   `dgbatch report` (pipeline/report/page.py)
  <dir>/.<one of the above>.tmp-<32 hex>                    a local writer's temp file (pipeline/storage.py)

with shard ids `<5 digits>-<9 digits>` (pipeline/shards.py). A prefix holding anything else belongs to
someone else: it is refused before any work, naming the file, and nothing in it is touched. So is an
output prefix that overlaps the input (an input file under OUT, or OUT under an input directory, where our
data files would become inputs of the next listing).
"""

from __future__ import annotations

import os
import re

from pipeline.shards import InputFile
from pipeline.spec import SpecError
from pipeline.storage import Storage, filesystem

_SHARD = r"shard-\d{5,}-\d{9,}"
_HEX = r"[0-9a-f]{32}"
ATTEMPT_FILE = re.compile(r"^shard-(?P<id>\d{5,}-\d{9,})\.attempt-(?P<k>\d+)\.parquet$")
CHARTS = ("status_counts", "throughput", "tokens_per_forward", "denoising_steps", "latency_s",
          "per_replica", "errors")
_OURS = re.compile(
    r"^(?:"
    r"_plan\.json|_job\.json|_manifest\.json|_SUCCESS"
    rf"|_probe-{_HEX}"
    rf"|_commits/{_SHARD}\.json"
    rf"|data/{_SHARD}\.attempt-\d+\.parquet"
    r"|_runs/run-[0-9A-Za-z_-]+\.json"
    rf"|_report/(?:index\.html|(?:{'|'.join(CHARTS)})\.png)"
    r")$")
_TEMP = re.compile(rf"^(?P<dir>(?:[^/]+/)?)\.(?P<name>[^/]+)\.tmp-{_HEX}$")


def is_ours(rel: str) -> bool:
    """Whether `rel` (a path relative to the output prefix) is a name this job's layout could write."""
    if _OURS.match(rel):
        return True
    m = _TEMP.match(rel)
    return bool(m) and bool(_OURS.match(m["dir"] + m["name"]))


def foreign_files(storage: Storage) -> list[str]:
    """Paths (relative to the prefix) of every file under it that is not ours, sorted."""
    storage.invalidate()
    root = storage.root.rstrip("/")
    try:
        found = storage.fs.find(root)
    except FileNotFoundError:
        return []
    out = []
    for p in found:
        rel = p[len(root):].lstrip("/") if p.startswith(root) else p
        if rel and not is_ours(rel):
            out.append(rel)
    return sorted(out)


def _location(url: str, endpoint_url: str | None, options: dict | None) -> tuple[str, str]:
    """(store, absolute path) to compare two URLs: local paths resolved, s3 and s3a the same store."""
    fs, path = filesystem(url, endpoint_url, options)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" in protocols or "local" in protocols:
        return "file", os.path.realpath(path)
    store = "s3" if {"s3", "s3a"} & set(protocols) else protocols[0]
    return store, "/" + path.strip("/")


def _under(child: tuple[str, str], parent: tuple[str, str]) -> bool:
    if child[0] != parent[0]:
        return False
    c, p = child[1].rstrip("/"), parent[1].rstrip("/")
    return c == p or c.startswith(p + "/")


def input_root(url: str) -> str | None:
    """The directory an input URL lists (a directory, or a glob's fixed part); None for a single file."""
    cuts = [url.find(c) for c in "*?[" if c in url]
    return url[:min(cuts)].rsplit("/", 1)[0] if cuts else None


def check_output_prefix(storage: Storage, input_url: str, files: list[InputFile],
                        endpoint_url: str | None = None, options: dict | None = None) -> None:
    """Refuse (SpecError naming the file) an output prefix that overlaps the input or holds foreign files."""
    out = _location(storage.url, endpoint_url, options)
    for f in files:
        if _under(_location(f.path, endpoint_url, options), out):
            raise SpecError(f"output.path {storage.url}: input file {f.path} lies inside the output prefix; "
                            "use an output prefix outside the input")
    roots = [input_root(input_url)]
    if roots[0] is None:  # a directory input lists everything under it; a file input contains nothing
        fs, path = filesystem(input_url, endpoint_url, options)
        roots = [input_url] if fs.isdir(path) else []
    for r in roots:
        if r is not None and _under(out, _location(r, endpoint_url, options)):
            raise SpecError(f"output.path {storage.url}: lies inside the input {input_url}, so the job's own "
                            "data files would be read as input; use an output prefix outside the input")
    foreign = foreign_files(storage)
    if foreign:
        shown = ", ".join(storage.uri(r) for r in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise SpecError(f"output.path {storage.url}: holds files that dgbatch did not write ({shown}{more}); "
                        "dgbatch never overwrites or deletes them. Use an empty or new output prefix")
