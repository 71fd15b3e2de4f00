"""The CLI's subcommands, one module each; ``COMMANDS`` is the order ``--help`` lists them."""

from . import formats_table, quantize

COMMANDS = [quantize, formats_table]
DEFAULT_COMMAND = "quantize"
