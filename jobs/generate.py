"""Cluster entry point: `ray job submit -- python -m jobs.generate job.yaml`.

Joins the cluster named by RAY_ADDRESS (set by `ray job submit`), else a running local head
(`ray start --head`), and runs or resumes the job. Exit status 2 for an unusable spec or input.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    import argparse

    from jobs import cmd_run

    parser = argparse.ArgumentParser(prog="python -m jobs.generate", description=__doc__.splitlines()[0])
    cmd_run.add_parser(parser)
    args = parser.parse_args(argv)
    if args.ray_address is None:
        args.ray_address = os.environ.get("RAY_ADDRESS", "auto")
    return cmd_run.run(args)


if __name__ == "__main__":
    sys.exit(main())
