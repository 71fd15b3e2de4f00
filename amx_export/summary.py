"""The end-of-run summary of a rewrite: a table on the terminal and the same as JSON."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table


def summary_dict(source: Path, output: Path, options, outcome, seconds: float) -> dict:
    quantized = outcome.quantized
    skipped = [r for r in outcome.layers if r.status == "skipped"]
    before = sum(r.bytes_before for r in quantized)
    after = sum(r.bytes_after for r in quantized)
    elements = sum(r.k * r.n for r in quantized)
    return {
        "input": str(source),
        "output": str(output),
        "weight_format": options.format,
        "act_format": options.act_format,
        "emulated": options.emulate,
        "target": options.target,
        "layers_quantized": len(quantized),
        "layers_skipped": [{"name": r.name, "reason": r.reason} for r in skipped],
        "attention_matmuls_quantized": len(outcome.attention_matmuls),
        "weight_bytes_before": before,
        "weight_bytes_after": after,
        "bits_per_weight": round(8 * after / elements, 4) if elements else None,
        "seconds": round(seconds, 2),
        "layers": [vars(r) for r in quantized],
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def print_summary(summary: dict, already_done: bool = False, console: Console | None = None):
    console = console or Console()
    if already_done:
        console.print(f"{summary['input']} is already rewritten: nothing to change.")
    table = Table(title="amx-export summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("output", summary["output"])
    table.add_row(
        "format",
        f"weights {summary['weight_format']}, activations "
        f"{summary['act_format']}" + (" (emulated)" if summary["emulated"] else ""),
    )
    table.add_row("target", summary["target"])
    table.add_row("layers rewritten", str(summary["layers_quantized"]))
    reasons = Counter(s["reason"] for s in summary["layers_skipped"])
    for reason, count in reasons.items():
        names = [s["name"] for s in summary["layers_skipped"] if s["reason"] == reason]
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        table.add_row("layers skipped", f"{count}: {reason} ({shown})")
    if summary["attention_matmuls_quantized"]:
        table.add_row("attention matmuls", str(summary["attention_matmuls_quantized"]))
    if summary["weight_bytes_before"]:
        ratio = summary["weight_bytes_before"] / summary["weight_bytes_after"]
        table.add_row(
            "weight bytes",
            f"{_mib(summary['weight_bytes_before'])} -> {_mib(summary['weight_bytes_after'])} "
            f"({ratio:.1f}x smaller)",
        )
        table.add_row("bits per weight", f"{summary['bits_per_weight']:.3f}")
    table.add_row("time", f"{summary['seconds']:.1f} s")
    console.print(table)
