"""The end-of-run summary of a rewrite: a table on the terminal and the same as JSON."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table


def summary_dict(
    source: Path, output: Path, options, outcome, seconds: float, loaded=None, genai=None
) -> dict:
    """The summary of a rewrite; ``loaded``: the input's onnx_io.Source (its checker verdict);
    ``genai``: what was done with an onnxruntime-genai config (amx_export.genai.Plan.summary)."""
    quantized = outcome.quantized
    skipped = [r for r in outcome.layers if r.status == "skipped"]
    before = sum(r.bytes_before for r in quantized)
    after = sum(r.bytes_after for r in quantized)
    elements = sum(r.k * r.n for r in quantized if r.bytes_after)  # each packed weight once
    return {
        "input": str(source),
        "output": str(output),
        "weight_format": options.format,
        "act_format": options.act_format,
        "emulated": options.emulate,
        "target": options.target,
        "layers_quantized": len(quantized),
        "layers_skipped": [
            {"name": r.name, "reason": r.reason, **({"weight": r.weight} if r.weight else {})}
            for r in skipped
        ],
        "layers_sharing_a_packed_weight": sum(bool(r.shares) for r in quantized),
        "attention_none_found": bool(
            options.attention and not options.weights_only and not outcome.attention_found
        ),
        "attention_matmuls_quantized": len(outcome.attention_matmuls),
        "attention_operands_quantized": outcome.attention_matmuls,
        "attention_matmuls_skipped": [
            {"name": name, "reason": reason} for name, reason in outcome.attention_skipped
        ],
        "attention_grouped": outcome.attention_grouped,
        "rotary_fused": outcome.rotary_fused,
        "opset_upgraded": list(outcome.opset_change) if outcome.opset_change else None,
        "input_checker_error": None if loaded is None else loaded.checker_error,
        "weight_bytes_before": before,
        "weight_bytes_after": after,
        "bits_per_weight": round(8 * after / elements, 4) if elements else None,
        "genai_config": genai,
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
    if summary["opset_upgraded"]:
        old, new = summary["opset_upgraded"]
        table.add_row("opset", f"{old} -> {new} (the emulation needs opset {new} ops)")
    if summary["input_checker_error"]:
        table.add_row(
            "onnx.checker",
            f"the input fails it ({summary['input_checker_error']}); the output is not held "
            "to it either",
        )
    table.add_row("layers rewritten", str(summary["layers_quantized"]))
    if summary["layers_sharing_a_packed_weight"]:
        table.add_row(
            "shared weights",
            f"{summary['layers_sharing_a_packed_weight']} layers reuse a packed weight of another",
        )
    reasons = Counter(s["reason"] for s in summary["layers_skipped"])
    for reason, count in reasons.items():
        names = [s["name"] for s in summary["layers_skipped"] if s["reason"] == reason]
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        table.add_row("layers skipped", f"{count}: {reason} ({shown})")
    if summary["attention_matmuls_quantized"]:
        operands = summary["attention_operands_quantized"]
        shown = "; ".join(f"{m}: {', '.join(v)}" for m, v in list(operands.items())[:2])
        more = ", ..." if len(operands) > 2 else ""
        table.add_row(
            "attention matmuls",
            f"{len(operands)} (operands quantized: {shown}{more})",
        )
    elif summary["attention_none_found"]:
        table.add_row(
            "attention matmuls",
            "none found (no Softmax between two activation matmuls; fused attention ops such "
            "as com.microsoft Attention compute theirs inside)",
        )
    if summary.get("attention_grouped"):
        table.add_row(
            "grouped attention",
            f"{len(summary['attention_grouped'])} products read their KV heads unrepeated "
            "(the copies of GQA's repeat_kv removed)",
        )
    if summary.get("rotary_fused"):
        table.add_row(
            "rotary embeddings",
            f"{len(summary['rotary_fused'])} fused into com.microsoft.RotaryEmbedding "
            "(--no-fuse-rotary keeps the standard ops)",
        )
    for skipped in summary["attention_matmuls_skipped"]:
        table.add_row("attention skipped", f"{skipped['name']}: {skipped['reason']}")
    if summary["weight_bytes_before"]:
        ratio = summary["weight_bytes_before"] / summary["weight_bytes_after"]
        table.add_row(
            "weight bytes",
            f"{_mib(summary['weight_bytes_before'])} -> {_mib(summary['weight_bytes_after'])} "
            f"({ratio:.1f}x smaller)",
        )
        table.add_row("bits per weight", f"{summary['bits_per_weight']:.3f}")
    if summary.get("genai_config"):
        genai = summary["genai_config"]
        table.add_row("genai config", f"{genai['path']}: {genai['action']}, {genai['detail']}")
    table.add_row("time", f"{summary['seconds']:.1f} s")
    console.print(table)
