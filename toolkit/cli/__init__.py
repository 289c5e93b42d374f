"""The `toolkit` command line: the root parser and ``main``. One module per command in this
package (``COMMANDS = {name: (add_args, run, short help, description)}``), shared argument helpers
in ``common.py``; commands import only ``common``, never each other or this module.

Nothing heavy is imported at module level: `toolkit --help` must not import TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from toolkit import __version__
from toolkit.cli.common import epilog
from toolkit.errors import ToolkitError, UsageError

# command modules, in the order `toolkit --help` lists them
_COMMAND_MODULES = ("train", "export", "parity", "bench", "footprint", "gate", "run")


def commands() -> dict:
    table = {}
    for name in _COMMAND_MODULES:
        table.update(importlib.import_module(f"toolkit.cli.{name}").COMMANDS)
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolkit",
        description="Train an image classifier or bring your own, export it to TFLite, ONNX, OpenVINO and TFLite "
        "Micro (float and int8), prove accuracy parity on the whole test set, and benchmark every format "
        "on every runtime.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add_args, run, short, long) in commands().items():
        p = sub.add_parser(
            name, help=short, description=long, formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_args(p)
        p.epilog = epilog(p)
        p.set_defaults(_run=run)
    return parser


def reference_markdown(width: int = 100) -> str:
    """docs/cli.md: every command's --help, as argparse prints it at ``width`` columns (written by
    `python docs/cli_md.py`; tests/test_cli.py keeps it current)."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # argparse's formatter reads the width from here
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        lines = ["# Command reference", "",
                 "Every command's `--help`, generated from the parsers by `python docs/cli_md.py` (a test fails when "
                 "this file is out of date). Task-first guides: [README.md](../README.md).", "",
                 "```text", parser.format_help().rstrip(), "```", ""]
        for name, child in sub.choices.items():
            lines += [f"## `toolkit {name}`", "", "```text", child.format_help().rstrip(), "```", ""]
        return "\n".join(lines)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args._run(args)
    except ToolkitError as exc:
        print(f"toolkit {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"toolkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


__all__ = ["main", "UsageError"]
