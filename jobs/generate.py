"""Running dgbatch on a Ray cluster you submit to: the job's driver and the head start it needs.

`ray job submit -- python -m jobs.generate job.yaml` (`main`): joins the cluster named by RAY_ADDRESS (set
by `ray job submit`), else a running local head (`ray start --head`), and runs or resumes the job. Exit
status 2 for an unusable spec or input.

`dgbatch-ray ARGS` (`ray_main`, e.g. `dgbatch-ray start --head`): `ray ARGS` with this installation's bin
directory first on PATH (and VIRTUAL_ENV set), as activating the virtualenv would. Why: `ray job submit`
runs the entrypoint with `/bin/sh -c` in the environment of the head's `ray start`, not in the
submitter's (Ray 2.60 ray/dashboard/modules/job/job_supervisor.py: the supervisor copies its own
os.environ, adds RAY_ADDRESS and the job config, and starts the entrypoint with shell=True). A head
started as `/path/to/venv/bin/ray start` from a shell where that venv is not active therefore resolves
`python` through that shell's PATH, to another interpreter, and the job fails with "No module named
'jobs'". Nothing in the submit command can change that without naming the head's interpreter. A head
started with `dgbatch-ray start`, or from an activated venv, or in the project's images (where `python` on
PATH is the one dgbatch is installed in), runs `python -m jobs.generate` as written.
"""

from __future__ import annotations

import os
import shutil
import sys


def main(argv: list[str] | None = None) -> int:
    import argparse

    from jobs import cmd_run

    parser = argparse.ArgumentParser(prog="python -m jobs.generate",
                                     description="Run or resume a job as a `ray job submit` entrypoint.")
    cmd_run.add_parser(parser)
    args = parser.parse_args(argv)
    if args.ray_address is None:
        args.ray_address = os.environ.get("RAY_ADDRESS", "auto")
    return cmd_run.run(args)


def ray_main(argv: list[str] | None = None) -> int:
    """`dgbatch-ray ARGS`: exec `ray ARGS` so that job entrypoints on the node it starts run this Python."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Not resolved: a venv's bin/python is a symlink to the base interpreter, and only the link's own
    # directory (with its pyvenv.cfg beside it) makes it the venv's interpreter.
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    env = dict(os.environ)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir, *rest])
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    ray = os.path.join(bin_dir, "ray")
    if not os.access(ray, os.X_OK):
        ray = shutil.which("ray", path=env["PATH"]) or ""
    if not ray:
        print(f"dgbatch-ray: no `ray` command beside {sys.executable} or on PATH; install ray[default] into "
              "this environment", file=sys.stderr)
        return 2
    if not os.access(os.path.join(bin_dir, "python"), os.X_OK):
        print(f"dgbatch-ray: warning: {bin_dir} has no `python`, so job entrypoints that say `python` will "
              f"not run {sys.executable}; submit `{sys.executable} -m jobs.generate job.yaml` instead",
              file=sys.stderr)
    os.execve(ray, [ray, *argv], env)
    return 0  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main())
