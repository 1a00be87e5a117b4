"""`dgbatch run job.yaml`: run or resume a batch job on Ray (local unless --ray-address or RAY_ADDRESS).

Everything it prints (errors, tracebacks, the summary) is scrubbed of secret-shaped text
(pipeline/redact.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli import scrubbed_failures


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="job spec, YAML or JSON")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join ('auto' for a running `ray start --head`); default: "
                             "RAY_ADDRESS, else a local Ray started for this run")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


@scrubbed_failures("dgbatch run")
def run(args: argparse.Namespace) -> int:
    from pipeline.redact import scrub, scrub_json
    from pipeline.spec import JobSpec, SpecError

    try:
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
