"""`dgbatch export OUT [--format jsonl|openai-batch] [--to DEST]`: a run's committed rows as JSON Lines.

The rows stay Parquet under OUT; this streams the committed ones (a finished run, or one in progress) to
stdout or to DEST, a local path or fsspec URL (pipeline/export.py: formats, what is filled, what is
refused). A summary goes to stderr. Messages are scrubbed of secret-shaped text (pipeline/redact.py); the
rows themselves are the job's data and are written as they are.
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli import scrubbed_failures


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the job's output.path (local path or fsspec URL)")
    parser.add_argument("--format", default="jsonl", choices=("jsonl", "openai-batch"),
                        help="jsonl: every column of each row (default); openai-batch: OpenAI Batch API "
                             "output lines")
    parser.add_argument("--to", dest="dest", default=None, metavar="DEST",
                        help="write here (local path or fsspec URL) instead of stdout; never inside OUT")
    parser.add_argument("--endpoint-url", default=None,
                        help="S3-compatible endpoint for OUT and DEST (as the spec's storage.endpoint_url)")


@scrubbed_failures("dgbatch export")
def run(args: argparse.Namespace) -> int:
    from pipeline.export import ExportConfig, ExportError, export
    from pipeline.redact import scrub

    cfg = ExportConfig(args.out, format=args.format, dest=args.dest, endpoint_url=args.endpoint_url)
    sys.stdout.flush()  # the rows go to the binary stream under it
    try:
        done = export(cfg, stream=None if cfg.dest is not None else sys.stdout.buffer)
    except ExportError as exc:
        print(scrub(f"dgbatch export: {exc}"), file=sys.stderr)
        return 2
    state = "finished run" if done["finished"] else \
        f"run in progress or stopped: only {done['shards_committed']}/{done['shards']} shards committed"
    print(scrub(f"dgbatch export: {done['rows']} rows ({state}) -> {done['dest'] or 'stdout'}"),
          file=sys.stderr)
    return 0
