"""`dgbatch report OUT`: write an HTML run report (charts, errors, spec, manifest) under OUT/_report/.

Works on a finished run and on one still in progress; rerun it to refresh. For S3-compatible stores pass
`--endpoint-url` (credentials come from the environment, as for the job itself). The page and what this
prints are scrubbed of secret-shaped text (pipeline/redact.py).
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli import scrubbed_failures


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the job's output.path (local path or fsspec URL)")
    parser.add_argument("--endpoint-url", default=None,
                        help="S3-compatible endpoint (as the spec's storage.endpoint_url)")
    parser.add_argument("--report-dir", default=None,
                        help="write the report here instead of OUT/_report (e.g. a local dir for an S3 run)")


@scrubbed_failures("dgbatch report")
def run(args: argparse.Namespace) -> int:
    from pipeline.redact import scrub
    from pipeline.report import write_report

    try:
        index = write_report(args.out, endpoint_url=args.endpoint_url, report_dir=args.report_dir)
    except FileNotFoundError as exc:
        print(scrub(f"dgbatch report: {exc}"), file=sys.stderr)
        return 1
    print(scrub(index))
    return 0
