"""`dgbatch status OUT`: summarise a run in progress or done from its output prefix (printed scrubbed of
secret-shaped text, pipeline/redact.py)."""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli import scrubbed_failures


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the job's output.path (URL prefix)")
    parser.add_argument("--endpoint-url", default=None,
                        help="S3-compatible endpoint (as storage.endpoint_url)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


@scrubbed_failures("dgbatch status")
def run(args: argparse.Namespace) -> int:
    from pipeline.redact import scrub, scrub_json
    from pipeline.sink import status

    try:
        s = status(args.output, endpoint_url=args.endpoint_url)
    except FileNotFoundError as exc:
        print(scrub(f"dgbatch status: {exc}"), file=sys.stderr)
        return 2
    s = scrub_json(s)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    state = "done" if s["succeeded"] else "in progress (or stopped)"
    print(f"{s['output']}: {state}\n  shards {s['shards_committed']}/{s['shards']}, "
          f"rows {s['rows_committed']}/{s['rows']} ({s['rows_by_status']}), tokens {s['tokens']}")
    if s["manifest"]:
        m = s["manifest"]
        print(f"  valid {m['valid_pct']}%, {m['rows_per_s']} rows/s, replica-seconds {m['replica_seconds']}, "
              f"retries {m['retries']}, replica restarts {m['replica_restarts']}")
    return 0
