"""`dgbatch preview job.yaml [--limit N]`: `dgbatch run job.yaml --limit N` with N defaulting to 20
(jobs/cmd_run.py): the job's first rows printed as a table, nothing written under its output.path."""

from __future__ import annotations

import argparse

from jobs import cmd_run
from pipeline.preview import DEFAULT_ROWS


def add_parser(parser: argparse.ArgumentParser) -> None:
    cmd_run.add_parser(parser)
    parser.set_defaults(limit=DEFAULT_ROWS)


run = cmd_run.run
