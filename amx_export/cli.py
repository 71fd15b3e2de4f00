"""Command line: ``python -m amx_export [COMMAND] ...``.

Each subcommand lives in its own module under ``amx_export.commands`` and registers its
arguments there; this file only assembles them. Errors meant for the user are raised as
``UserError`` and printed as one line with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .commands import COMMANDS, DEFAULT_COMMAND
from .errors import UserError

DESCRIPTION = """\
amx-export: deploy LLMs in AMXFP4, the 4-bit microscaling format with one scale for the
positive and one for the negative values of every block of 32 (arXiv 2411.09909).

  python -m amx_export MODEL.onnx [options]   rewrite a model (same as: quantize MODEL.onnx)
  python -m amx_export COMMAND --help         the options of one command
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m amx_export",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    parser.set_defaults(command_names=set(sub.choices))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in parser.get_default("command_names"):
        argv.insert(0, DEFAULT_COMMAND)  # python -m amx_export model.onnx
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given, for outputs that record it
    try:
        return args.run(args) or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
