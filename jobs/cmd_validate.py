"""`dgbatch validate job.yaml`: check the spec, the input files and columns, the output prefix and the model
without generating anything (no Ray). With `structured_output`, the constraint is also compiled against the
model's tokenizer (torch is imported to read the model package; the weights are not loaded): an unsupported
schema keyword or a constraint longer than max_new_tokens is refused here, naming keyword or length.
What it prints is scrubbed of secret-shaped text (pipeline/redact.py)."""

from __future__ import annotations

import argparse
import sys

from jobs.cli import scrubbed_failures


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="job spec, YAML or JSON")


@scrubbed_failures("dgbatch validate")
def run(args: argparse.Namespace) -> int:
    from pipeline.redact import scrub
    from pipeline.spec import JobSpec, SpecError
    from pipeline.validate import validate_job

    try:
        spec = JobSpec.load(args.spec)
        v = validate_job(spec)
    except SpecError as exc:
        print(scrub(f"dgbatch validate: {exc}"), file=sys.stderr)  # errors quote URLs and library messages
        return 2
    from pipeline.model_path import resolve_model_path

    path, label = resolve_model_path(spec.model)
    print(scrub(f"ok: {len(v.files)} input file(s), {v.rows} rows, {v.shards} shards of <= "
                f"{spec.resources.shard_rows} rows -> {v.output.url}\nmodel: {path} ({label})"))
    if spec.model.quantization:
        print(f"model.quantization: {spec.model.quantization} (the bf16 weights are quantized as they load)")
    if v.min_new_tokens is not None:
        print(f"structured_output: compiles; needs at least {v.min_new_tokens} new tokens")
    if v.resumes:
        print("output: holds this job's plan already; `dgbatch run` resumes it (committed shards are kept)")
    if v.rows == 0:
        print("warning: the input has 0 rows; `dgbatch run` finishes with an empty result")
    return 0
