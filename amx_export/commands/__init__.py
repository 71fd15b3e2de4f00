"""The CLI's subcommands, one module each; ``COMMANDS`` is the order ``--help`` lists them."""

from . import build, check, evaluate, export, formats_table, generate, quantize, reference

COMMANDS = [quantize, export, generate, reference, check, evaluate, formats_table, build]
DEFAULT_COMMAND = "quantize"
