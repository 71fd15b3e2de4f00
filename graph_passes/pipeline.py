"""The rewrite as one call: options -> the passes, in order -> what they did."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from amx_export import formats

from . import contract
from .cleanup import CleanupPass
from .quantize_attention import QuantizeAttentionPass
from .quantize_linears import LayerRecord, QuantizeLinearsPass
from .tensorrt_form import TensorRTFormPass


@dataclass
class Options:
    format: str = formats.DEFAULT
    weights_only: bool = False
    exclude: list[str] = field(default_factory=list)
    include_head: bool = False
    attention: bool = False
    emulate: bool = False
    target: str = contract.ONNXRUNTIME  # contract.TARGETS

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise ValueError (one line) for options that cannot go together."""
        if self.target not in contract.TARGETS:
            raise ValueError(
                f"unknown target {self.target!r} (known: {', '.join(contract.TARGETS)})"
            )
        if self.emulate and self.target == contract.TENSORRT:
            raise ValueError(
                "--emulate and --target tensorrt exclude each other: the emulation lowers the amx "
                "nodes to standard ONNX ops, which cannot read int32-packed weights"
            )

    @property
    def act_format(self) -> str:
        return contract.NO_ACT if self.weights_only else self.format


@dataclass
class Outcome:
    layers: list[LayerRecord]
    attention_matmuls: list[str]
    emulated_nodes: int
    modified: bool

    @property
    def quantized(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.status == "quantized"]


def count_amx_nodes(model: ir.Model) -> int:
    return sum(1 for node in ir.traversal.RecursiveGraphIterator(model.graph)
               if node.domain == contract.DOMAIN)  # fmt: skip


def rewrite(
    model: ir.Model,
    options: Options,
    progress: Callable[[list], Iterable] | None = None,
) -> Outcome:
    """Run the passes the options ask for on ``model`` (in place)."""
    options.check()
    form = model.metadata_props.get(contract.TARGET_KEY, contract.ONNXRUNTIME)
    if form == contract.TENSORRT and options.target != contract.TENSORRT:
        raise ValueError(
            "the model is already in the TensorRT form (int32-packed weights); rewrite the "
            "full-precision model or its onnxruntime form instead"
        )
    if options.attention and not options.weights_only:
        # attention needs operand ranks; inferred before the linears turn into custom nodes
        ShapeInferencePass(strict_mode=False)(model)
    linears = QuantizeLinearsPass(
        options.format, options.act_format, options.exclude, options.include_head, progress
    )
    modified = linears(model).modified
    attention: list[str] = []
    if options.attention and not options.weights_only:
        attention_pass = QuantizeAttentionPass(options.format)
        modified |= attention_pass(model).modified
        attention = attention_pass.quantized
    if options.target == contract.TENSORRT:
        modified |= TensorRTFormPass()(model).modified
    emulated = 0
    if options.emulate:
        from .emulate import EmulatePass

        emulated = count_amx_nodes(model)
        modified |= EmulatePass()(model).modified
    if modified:
        CleanupPass()(model)
    return Outcome(linears.records, attention, emulated, modified)
