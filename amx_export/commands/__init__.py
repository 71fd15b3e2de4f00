"""The CLI's subcommands, one module each; ``COMMANDS`` is the order ``--help`` lists them."""

from . import formats_table

COMMANDS = [formats_table]
