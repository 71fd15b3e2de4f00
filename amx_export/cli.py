"""Command line: ``python -m amx_export [COMMAND] ...``.

Each subcommand lives in its own module under ``amx_export.commands`` and registers its
arguments there; this file only assembles them. Errors meant for the user are raised as
``UserError`` and printed as one line with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .commands import COMMANDS
from .errors import UserError

DESCRIPTION = """\
amx-export: deploy LLMs in AMXFP4, the 4-bit microscaling format with one scale for the
positive and one for the negative values of every block of 32 (arXiv 2411.09909).
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args) or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
