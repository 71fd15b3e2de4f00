"""The CLI's subcommands, one module each; ``COMMANDS`` is the order ``--help`` lists them."""

from . import build, check, evaluate, export, formats_table, quantize, reference

COMMANDS = [quantize, export, reference, check, evaluate, formats_table, build]
DEFAULT_COMMAND = "quantize"
