"""The rewrite as one call: options -> the passes, in order -> what they did."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import onnx_ir as ir

from amx_export import formats

from . import contract
from .cleanup import CleanupPass
from .emulate import MIN_OPSET as EMULATION_OPSET
from .emulate import EmulatePass
from .grouped_attention import GroupedAttentionPass
from .quantize_attention import QuantizeAttentionPass
from .quantize_linears import LayerRecord, QuantizeLinearsPass
from .rotary import FuseRotaryPass
from .shapes import InferShapesPass
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
    fuse_rotary: bool = True  # com.microsoft.RotaryEmbedding (onnxruntime target only)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise ValueError (one line) for options that cannot go together or are malformed."""
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"--exclude {pattern!r} is not a regular expression: {error}"
                ) from None
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
    attention_matmuls: dict[str, list[str]]  # matmul -> the operand values quantized
    emulated_nodes: int
    modified: bool
    opset_change: tuple[int, int] | None = None  # (from, to) when the model was upgraded
    attention_skipped: list[tuple[str, str]] = field(default_factory=list)
    attention_found: int = 0  # Q·Kᵀ / P·V matmuls found (quantized now or before)
    attention_grouped: list[str] = field(default_factory=list)  # read their KV heads unrepeated
    rotary_fused: list[str] = field(default_factory=list)  # Adds now RotaryEmbedding nodes

    @property
    def quantized(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.status == "quantized"]


def default_opset(model: ir.Model) -> int | None:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx"))


def _upgrade_opset(model: ir.Model, version: int) -> tuple[int, int] | None:
    """Convert the model's default-domain ops to ``version`` if it is older (onnxscript's
    version converter works on the IR, so external data stays where it is)."""
    old = default_opset(model)
    if old is None or old >= version:
        return None
    from onnxscript.version_converter import convert_version

    quiet = logging.getLogger("onnxscript")  # it logs a warning for the fallback it takes
    level, quiet.level = quiet.level, logging.ERROR
    try:
        convert_version(model, target_version=version, fallback=True)
    except Exception as error:  # the converter's own errors name the op it cannot convert
        raise ValueError(
            f"the emulation needs opset >= {version} and converting from opset {old} "
            f"failed: {type(error).__name__}: {error}"
        ) from None
    finally:
        quiet.setLevel(level)
    if default_opset(model) != version:
        raise ValueError(f"the emulation needs opset >= {version}; could not convert from {old}")
    return old, version


def _formats_in(model: ir.Model) -> set[tuple[str, str]]:
    """(weight or "attention", format) of every amx node; the metadata of an emulated model."""
    found = set()
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain != contract.DOMAIN:
            continue
        attrs = {k: a.value for k, a in node.attributes.items()}
        if node.op_type == contract.MATMUL:
            found.add(("weights", attrs.get("weight_format")))
            found.add(("activations", attrs.get("act_format")))
        else:
            found.add(("attention", attrs.get("format")))
    if not found and "amx_export" in model.metadata_props:
        try:
            options = json.loads(model.metadata_props["amx_export"])
            act = contract.NO_ACT if options.get("weights_only") else options.get("format")
            found = {("weights", options.get("format")), ("activations", act)}
        except (ValueError, AttributeError):
            pass
    return found


def _check_same_formats(model: ir.Model, options: Options) -> None:
    """A rewritten model holds no full-precision weights: it cannot become another format."""
    wanted = {"weights": options.format, "activations": options.act_format,
              "attention": options.format}  # fmt: skip
    found = _formats_in(model)
    if any(wanted[role] != fmt for role, fmt in found):
        have = ", ".join(f"{role} {fmt}" for role, fmt in sorted(found))
        ask = f"weights {options.format}, activations {options.act_format}"
        raise ValueError(
            f"the model is already rewritten ({have}) and holds no full-precision weights to "
            f"re-pack as {ask}: rewrite the original model instead"
        )


def emulate(model: ir.Model) -> tuple[int, int] | None:
    """Lower the amx nodes to standard ops (in place), upgrading the opset first if the
    emulation needs it; returns the opset change, if any."""
    change = _upgrade_opset(model, EMULATION_OPSET)
    if EmulatePass()(model).modified or change is not None:
        CleanupPass()(model)
    return change


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
    _check_same_formats(model, options)
    opset_change = _upgrade_opset(model, EMULATION_OPSET) if options.emulate else None
    # bias folding and attention read ranks: inferred before the linears become custom nodes
    InferShapesPass()(model)
    linears = QuantizeLinearsPass(
        options.format, options.act_format, options.exclude, options.include_head, progress
    )
    modified = linears(model).modified or opset_change is not None
    grouping = GroupedAttentionPass()  # GQA's copies of the keys and values: see its module
    modified |= grouping(model).modified
    attention: dict[str, list[str]] = {}
    attention_skipped: list[tuple[str, str]] = []
    attention_found = 0
    if options.attention and not options.weights_only:
        attention_pass = QuantizeAttentionPass(options.format)
        modified |= attention_pass(model).modified
        attention, attention_skipped = attention_pass.quantized, attention_pass.skipped
        attention_found = attention_pass.found
    rotary = FuseRotaryPass()  # custom ops and emulation alike: one rotary kernel in both
    if options.fuse_rotary and options.target == contract.ONNXRUNTIME:
        modified |= rotary(model).modified
    if options.target == contract.TENSORRT:
        modified |= TensorRTFormPass()(model).modified
    emulated = 0
    if options.emulate:
        emulated = count_amx_nodes(model)
        modified |= EmulatePass()(model).modified
    if modified:
        CleanupPass()(model)
    return Outcome(
        linears.records, attention, emulated, modified, opset_change, attention_skipped,
        attention_found, grouping.grouped, rotary.fused,
    )  # fmt: skip
