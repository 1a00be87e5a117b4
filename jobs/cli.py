"""The `dgbatch` console script: one subcommand per module, each module owning its flags.

Each command module exposes `add_parser(subparsers) -> None` and `run(args) -> int`. Modules are imported
lazily so that `dgbatch validate` does not pay for torch or Ray when it does not need them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). The module adds its own arguments.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("jobs.cmd_generate", "generate text for one or more prompts (quick check)"),
    "run": ("jobs.cmd_run", "run a batch job from a YAML/JSON job spec"),
    "validate": ("jobs.cmd_validate", "check a job spec, its input schema and output prefix"),
    "status": ("jobs.cmd_status", "summarise a run in progress or done"),
    "check-schema": ("jobs.cmd_check_schema", "compile JSON Schemas and report support"),
    "report": ("jobs.cmd_report", "write an HTML run report under OUT/_report/"),
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, _ = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
