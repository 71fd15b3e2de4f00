"""Command line: ``python -m amx_export [COMMAND] ...``.

Each subcommand lives in its own module under ``amx_export.commands`` and registers its
arguments there; this file only assembles them. Errors meant for the user are raised as
``UserError`` and printed as one line with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from . import signals
from .errors import EmulationWarning, UserError, missing_extra
from .signals import Terminated

DESCRIPTION = """\
amx-export: deploy LLMs in AMXFP4, the 4-bit microscaling format with one scale for the
positive and one for the negative values of every block of 32 (arXiv 2411.09909).

  python -m amx_export MODEL.onnx [options]   rewrite a model (same as: quantize MODEL.onnx)
  python -m amx_export COMMAND --help         the options of one command
"""


def _one_line_warnings(show):
    """showwarning that prints our own warnings as one ``warning:`` line, others as before."""

    def showwarning(message, category, *args, **kwargs):
        if issubclass(category, EmulationWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    return showwarning


def build_parser() -> argparse.ArgumentParser:
    from .commands import COMMANDS

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
    """Run one command; every way it can end is one line on stderr and an exit status:
    0 done, 1 a check failed or an internal error, 2 bad input, 130 Ctrl-C, 143 SIGTERM."""
    signals.install()
    args = None
    try:
        from .commands import DEFAULT_COMMAND

        parser = build_parser()
        argv = list(sys.argv[1:] if argv is None else argv)
        names = parser.get_default("command_names")
        if argv and not argv[0].startswith("-") and argv[0] not in names:
            argv.insert(0, DEFAULT_COMMAND)  # python -m amx_export model.onnx
        args = parser.parse_args(argv)
        args.argv = argv  # the command line as given, for outputs that record it
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return args.run(args) or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:  # an extra not installed, or else a bug
        extra = missing_extra(error, getattr(args, "command", None))
        if extra is None:
            return _internal_error(error)
        print(f"error: {extra}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except Exception as error:
        return _internal_error(error)


def _internal_error(error: Exception) -> int:
    """A bug: one line, the traceback on request."""
    if os.environ.get("AMX_EXPORT_TRACEBACK"):
        traceback.print_exc()
    print(
        f"error: internal error ({type(error).__name__}: {error}); please report it "
        "(AMX_EXPORT_TRACEBACK=1 shows the traceback)",
        file=sys.stderr,
    )
    return 1
