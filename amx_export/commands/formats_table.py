"""``python -m amx_export formats``: the formats, their cost, and their error, measured live."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from .. import formats
from ..synthetic import outlier_activations, relative_mse

HELP = "list the quantization formats with their bits per element and measured error"


def register(sub) -> None:
    parser = sub.add_parser(
        "formats",
        help=HELP,
        description=HELP + ". The error is the relative MSE of fake_quant on a fixed sample: "
        "Gaussian activations with a few outlier channels (amx_export.synthetic).",
    )
    parser.add_argument("--rows", type=int, default=256, help="sample rows (default 256)")
    parser.add_argument("--cols", type=int, default=4096, help="sample columns = K (default 4096)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    parser.set_defaults(run=run)


def measure(rows: int = 256, cols: int = 4096, seed: int = 0) -> dict[str, float]:
    """Relative MSE of every format on the Gaussian-with-outliers sample."""
    x = outlier_activations(rows, cols, seed=seed)
    return {name: relative_mse(x, formats.fake_quant(x, name)) for name in formats.names()}


def run(args: argparse.Namespace) -> int:
    errors = measure(args.rows, args.cols, args.seed)
    table = Table(title=f"Formats (relative MSE on {args.rows}x{args.cols} Gaussian + outliers)")
    for column in ("format", "block", "scales", "bits/element", "relative MSE", "vs mxfp4"):
        table.add_column(column, justify="left" if column in ("format", "scales") else "right")
    for name in formats.names():
        spec = formats.get(name)
        scales = f"{spec.scales_per_block} x {spec.scale_format.name}"
        if spec.tensor_scale:
            scales += " + fp32"
        table.add_row(
            name,
            str(spec.block_size),
            scales,
            f"{spec.bits_per_element:.2f}",
            f"{errors[name]:.5f}",
            f"{errors[name] / errors['mxfp4']:.2f}x",
        )
    Console(width=100).print(table)  # wide enough for every row on one line
    return 0
