"""QuantizeAttentionPass: amx.Quantize on both operands of activation-by-activation MatMuls.

In attention, Q·Kᵀ and P·V multiply two activations. Each operand is fake-quantized along
the product's reduction axis, as the AMXFP4 authors do: the left operand along its last
axis (head_dim for Q, key sequence for P), the right operand along its second-to-last axis
(so it is transposed, quantized along the last axis, and transposed back).
"""

from __future__ import annotations

import onnx_ir as ir

from amx_export import formats

from . import contract
from .constants import constant_source


def _is_quantized(value: ir.Value) -> bool:
    """Produced by amx.Quantize, directly or through the transpose this pass adds."""
    node = value.producer()
    if node is not None and node.op_type == "Transpose" and node.name.endswith("/amx_T_back"):
        node = node.inputs[0].producer()
    return node is not None and node.domain == contract.DOMAIN


def _swap_last_two(rank: int) -> list[int]:
    return [*range(rank - 2), rank - 1, rank - 2]


class QuantizeAttentionPass(ir.passes.InPlacePass):
    """Insert amx.Quantize on both inputs of every MatMul whose operands are activations.

    Args:
        fmt: the activation format (an ``amx_export.formats`` name).
    """

    def __init__(self, fmt: str = formats.DEFAULT):
        super().__init__()
        self.format = formats.get(fmt).name
        self.quantized: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        self.quantized, self.skipped = [], []
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type != "MatMul":
                continue
            a, b = node.inputs
            if constant_source(a) is not None or constant_source(b) is not None:
                continue
            if _is_quantized(a) and _is_quantized(b):
                continue
            if b.shape is None or len(b.shape) < 2:
                self.skipped.append((node.name, "rank of the right operand is unknown"))
                continue
            graph.insert_before(node, self._quantize(node, 0, a, None))
            graph.insert_before(node, self._quantize(node, 1, b, len(b.shape)))
            self.quantized.append(node.name)
        if self.quantized:
            model.opset_imports[contract.DOMAIN] = contract.VERSION
        return ir.passes.PassResult(model, modified=bool(self.quantized))

    def _quantize(self, node: ir.Node, index: int, value: ir.Value, rank: int | None):
        """Nodes that fake-quantize ``value`` along the reduction axis and feed it to node."""
        prefix = f"{node.name}/in{index}"
        attrs = {"format": self.format}
        if rank is None:  # left operand: the reduction axis is already the last
            q = ir.node(
                contract.QUANTIZE, [value], attrs, domain=contract.DOMAIN, name=prefix + "/amx_q"
            )
            q.outputs[0].type, q.outputs[0].shape = value.type, value.shape
            node.replace_input_with(index, q.outputs[0])
            return [q]
        perm = _swap_last_two(rank)
        t = ir.node("Transpose", [value], {"perm": perm}, name=prefix + "/amx_T")
        q = ir.node(
            contract.QUANTIZE, [t.outputs[0]], attrs, domain=contract.DOMAIN, name=prefix + "/amx_q"
        )
        back = ir.node("Transpose", [q.outputs[0]], {"perm": perm}, name=prefix + "/amx_T_back")
        back.outputs[0].type, back.outputs[0].shape = value.type, value.shape
        node.replace_input_with(index, back.outputs[0])
        return [t, q, back]
