"""The `dgbatch` console script: one subcommand per module, each module owning its flags.

Each command module exposes `add_parser(subparsers) -> None` and `run(args) -> int`. Modules are imported
lazily so that `dgbatch validate` does not pay for torch or Ray when it does not need them.

A reader that stops early (`dgbatch status --json OUT | head`) ends every command quietly, with exit
status 141 (128 + SIGPIPE), what a shell reports for a command killed by SIGPIPE such as `cat` or `grep`
in the same place: Python ignores SIGPIPE, so without this the write raises BrokenPipeError and the
interpreter prints a traceback. 141 rather than 0 because the output was cut short, which `set -o
pipefail` scripts then see exactly as they would for any other Unix tool.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import select
import sys
import traceback
from collections.abc import Callable

EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE

# subcommand -> (module, one-line help). The module adds its own arguments.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("jobs.cmd_generate", "generate text for one or more prompts (quick check)"),
    "run": ("jobs.cmd_run", "run a batch job from a YAML/JSON job spec (--limit N: preview N rows)"),
    "preview": ("jobs.cmd_preview", "run a job's first rows (--limit, default 20) and print them; "
                                    "writes nothing under its output"),
    "export": ("jobs.cmd_export", "write a run's committed rows as JSON Lines (or OpenAI batch output)"),
    "validate": ("jobs.cmd_validate", "check a job spec, its input schema and output prefix"),
    "status": ("jobs.cmd_status", "summarise a run in progress or done"),
    "check-schema": ("jobs.cmd_check_schema", "compile JSON Schemas and report support"),
    "report": ("jobs.cmd_report", "write an HTML run report under OUT/_report/"),
    "plan-memory": ("jobs.cmd_plan_memory", "does a model fit on a card; how many canvases per forward"),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace | None]:
    parser = argparse.ArgumentParser(prog="dgbatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
        cmd_parser = sub.add_parser(name, help=help_text)
        if name == wanted:
            importlib.import_module(module_name).add_parser(cmd_parser)
    return parser, None


def scrubbed_failures(prog: str) -> Callable[[Callable[[argparse.Namespace], int]],
                                             Callable[[argparse.Namespace], int]]:
    """Decorator for a command's `run(args)`: an unexpected exception prints its traceback scrubbed of
    secret-shaped text (pipeline/redact.py; the interpreter's own traceback would not be) and returns 1.
    A closed stdout (BrokenPipeError) is left to `main`."""
    def wrap(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def guarded(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except BrokenPipeError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported, scrubbed
                from pipeline.redact import scrub

                print(scrub(traceback.format_exc()), file=sys.stderr, end="")
                print(scrub(f"{prog}: failed: {type(exc).__name__}: {exc}"), file=sys.stderr)
                return 1
        return guarded
    return wrap


def _stdout_reader_gone() -> bool:
    """True when stdout is a pipe (or socket) whose reading end is closed: poll reports POLLERR for it.
    A BrokenPipeError from anything else (a storage connection) is a real error and keeps its traceback."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, _ = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe could only be reported
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        # Anything still buffered would raise again in the interpreter's final flush: send it nowhere.
        # (The recipe in https://docs.python.org/3/library/signal.html#note-on-sigpipe.)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
