"""`dgbatch run job.yaml`: run or resume a batch job on Ray (local unless --ray-address or RAY_ADDRESS).

`--limit N` previews instead (`dgbatch preview` is the same with N defaulting to 20): the job's first N
rows, in plan order, go through the same validation, replicas and sink into a temporary local prefix that
is deleted afterwards, and are printed as a table (id, prompt, status, output); nothing is written under
the job's output.path (pipeline/preview.py).

Everything it prints (errors, tracebacks, the summary, the preview table) is scrubbed of secret-shaped
text (pipeline/redact.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from jobs.cli import scrubbed_failures

if TYPE_CHECKING:
    from pipeline.spec import JobSpec


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="job spec, YAML or JSON")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join ('auto' for a running `ray start --head`); default: "
                             "RAY_ADDRESS, else a local Ray started for this run")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--limit", type=_positive, default=None, metavar="N",
                        help="preview: run only the first N input rows into a temporary local prefix and "
                             "print them; nothing is written under output.path")


def run_preview(spec: JobSpec | dict | str, rows: int, *, backend_factory: Any = None,
                ray_address: str | None = None, progress: bool = True) -> str:
    """Run the first `rows` rows of `spec` (a JobSpec, dict or spec file path) into a temporary local
    prefix, delete it, and return the preview table (pipeline/preview.py). Raises SpecError as `run_job`
    does."""
    from pipeline.executor import run_job
    from pipeline.preview import Preview, format_preview, preview_rows
    from pipeline.spec import JobSpec

    job = JobSpec.load(spec) if isinstance(spec, str) else JobSpec.parse(spec)
    scratch = tempfile.mkdtemp(prefix="dgbatch-preview-")
    try:
        preview = Preview(rows, scratch)
        run_job(job, backend_factory=backend_factory, ray_address=ray_address, progress=progress,
                preview=preview)
        table, prompts = preview_rows(job, preview)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return format_preview(table, prompts) + f"\npreview only: nothing was written under {job.output.path}"


@scrubbed_failures("dgbatch run")
def run(args: argparse.Namespace) -> int:
    from pipeline.redact import scrub, scrub_json
    from pipeline.spec import JobSpec, SpecError

    try:
        if args.limit is not None:
            print(scrub(run_preview(args.spec, args.limit, ray_address=args.ray_address,
                                    progress=not args.quiet)))
            return 0
        spec = JobSpec.load(args.spec)
        from pipeline.executor import run_job

        manifest = run_job(spec, ray_address=args.ray_address, progress=not args.quiet)
    except SpecError as exc:
        print(scrub(f"dgbatch run: {exc}"), file=sys.stderr)
        return 2
    keys = ("output", "rows", "rows_by_status", "valid_pct", "tokens", "rows_per_s", "wall_s", "retries",
            "replica_restarts")
    summary = {k: manifest[k] for k in keys}
    print(json.dumps(scrub_json(summary), indent=1))
    return 0
