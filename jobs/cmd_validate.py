"""`dgbatch validate job.yaml`: check the spec, the input files and columns, the output prefix and the model
without generating anything (no Ray, no torch)."""

from __future__ import annotations

import argparse
import sys


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="job spec, YAML or JSON")


def run(args: argparse.Namespace) -> int:
    from pipeline.spec import JobSpec, SpecError
    from pipeline.validate import validate_job

    try:
        spec = JobSpec.load(args.spec)
        v = validate_job(spec)
    except SpecError as exc:
        print(f"dgbatch validate: {exc}", file=sys.stderr)
        return 2
    from pipeline.model_path import resolve_model_path

    path, label = resolve_model_path(spec.model)
    print(f"ok: {len(v.files)} input file(s), {v.rows} rows, {v.shards} shards of <= "
          f"{spec.resources.shard_rows} rows -> {v.output.url}\nmodel: {path} ({label})")
    return 0
