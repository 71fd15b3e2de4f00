"""QuantizeAttentionPass: amx.Quantize on both operands of the attention matmuls.

Attention is found by its Softmax: Q·Kᵀ is the activation-by-activation MatMul whose output
reaches the Softmax through scaling, masking and soft-capping ops, and P·V the one whose left
operand is the Softmax's output (through casts). Other activation matmuls (rotary embedding
tables, an emulated layer's decoded weight) are left alone, as is any product whose reduction
length is 1. Each operand is fake-quantized along the product's reduction axis, as the AMXFP4
authors do: the left operand along its last axis (head_dim for Q, key sequence for P), the
right operand along its second-to-last axis (so it is transposed, quantized along the last
axis, and transposed back).

Exporters that use scaled dot-product attention multiply Q and K each by sqrt(scale) before
Q·Kᵀ; eager attention (and ``amx_export.reference``) scales the product instead. Quantizing
the scaled operands would round differently, so the pass looks back through such scalar
constant Mul/Div ops and quantizes Q and K themselves: ``quantized`` names the values it
quantized for each matmul.
"""

from __future__ import annotations

import onnx_ir as ir

from amx_export import formats

from . import contract
from .constants import constant_array, constant_source, scaled_input

DEFAULT_DOMAINS = ("", "ai.onnx")
# ops between Q·Kᵀ and its Softmax: scaling, masks, soft-capping, casts, reshapes
SCORE_OPS = {"Mul", "Div", "Add", "Sub", "Where", "Cast", "Tanh", "Reshape", "Identity", "Slice"}
# ops between the Softmax and P·V, and the input the probabilities take there. Where: SDPA
# exports zero the rows that are all masked, Where(IsNaN(P), 0, P); Reshape: the rows that
# GroupedAttentionPass stacks
PROBABILITY_OPS = {
    "Cast": (0,), "Identity": (0,), "Dropout": (0,), "Where": (1, 2), "Reshape": (0,),
}  # fmt: skip
SEARCH_DEPTH = 8


def _is_default(node: ir.Node | None, *op_types: str) -> bool:
    return node is not None and node.domain in DEFAULT_DOMAINS and node.op_type in op_types


def _is_quantized(value: ir.Value) -> bool:
    """Produced by amx.Quantize, directly or through the transpose this pass adds."""
    node = value.producer()
    if node is not None and node.op_type == "Transpose" and node.name.endswith("/amx_T_back"):
        node = node.inputs[0].producer()
    return node is not None and node.domain == contract.DOMAIN


def _swap_last_two(rank: int) -> list[int]:
    return [*range(rank - 2), rank - 1, rank - 2]


def _activation_matmul(node: ir.Node) -> bool:
    return (
        _is_default(node, "MatMul")
        and constant_source(node.inputs[0]) is None
        and constant_source(node.inputs[1]) is None
    )


def _score_matmul(softmax: ir.Node) -> ir.Node | None:
    """The nearest activation MatMul upstream of the Softmax through SCORE_OPS."""
    frontier = [softmax.inputs[0]]
    for _ in range(SEARCH_DEPTH):
        following = []
        for value in frontier:
            node = value.producer() if value is not None else None
            if node is None:
                continue
            if _activation_matmul(node):
                return node
            if _is_default(node, *SCORE_OPS):
                following += [v for v in node.inputs if v is not None and not constant_source(v)]
        frontier = following
    return None


def _value_matmuls(softmax: ir.Node) -> list[ir.Node]:
    """Activation MatMuls that take the Softmax's output as their left operand."""
    found, frontier = [], [softmax.outputs[0]]
    for _ in range(SEARCH_DEPTH):
        following = []
        for value in frontier:
            for use in value.uses():
                node = use.node
                if use.idx == 0 and _activation_matmul(node):
                    found.append(node)
                elif (
                    _is_default(node, *PROBABILITY_OPS) and use.idx in PROBABILITY_OPS[node.op_type]
                ):
                    following.append(node.outputs[0])
        frontier = following
    return found


def _keeps_rows(node: ir.Node) -> bool:
    """A Reshape whose output's last axis is its input's (GroupedAttentionPass's rows): the
    blocks along the last axis are the same before and after it."""
    allowzero = node.attributes.get("allowzero")
    target = constant_source(node.inputs[1])
    if target is None or (allowzero is not None and allowzero.value):
        return False
    last = int(constant_array(*target).ravel()[-1])
    shape = node.inputs[0].shape
    return last == 0 or (shape is not None and len(shape) > 0 and shape[-1] == last)


def _before_scaling(value: ir.Value, left: bool) -> tuple[ir.Value, ir.Node | None, int | None]:
    """Look back through Mul/Div by a scalar constant (SDPA's sqrt(scale) on Q and K), and
    for the left operand, whose blocks run along the last axis, through Reshapes that keep
    it: (the value to quantize, the node that reads it, its input index there)."""
    reader, index = None, None
    while True:
        node = value.producer()
        if len(value.uses()) != 1:
            return value, reader, index
        if left and _is_default(node, "Reshape") and _keeps_rows(node):
            value, reader, index = node.inputs[0], node, 0
            continue
        scaled = scaled_input(node) if node is not None else None
        if scaled is None:
            return value, reader, index
        value, reader, index = node.inputs[scaled], node, scaled


def _reduction_is_one(matmul: ir.Node) -> bool:
    shape = matmul.inputs[0].shape
    return shape is not None and len(shape) > 0 and shape[-1] == 1


class QuantizeAttentionPass(ir.passes.InPlacePass):
    """Insert amx.Quantize on both inputs of every Q·Kᵀ and P·V MatMul (main graph and
    subgraphs).

    Args:
        fmt: the activation format (an ``amx_export.formats`` name).
    """

    def __init__(self, fmt: str = formats.DEFAULT):
        super().__init__()
        self.format = formats.get(fmt).name
        self.quantized: dict[str, list[str]] = {}  # matmul -> the values quantized for it
        self.skipped: list[tuple[str, str]] = []
        self.found = 0  # attention matmuls found, quantized now or by an earlier run

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.quantized, self.skipped = {}, []
        matmuls: list[ir.Node] = []
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if _is_default(node, "Softmax"):
                found = [_score_matmul(node), *_value_matmuls(node)]
                matmuls += [m for m in found if m is not None and m not in matmuls]
        self.found = len(matmuls)
        for node in matmuls:
            self._quantize_operands(node)
        if self.quantized:
            model.opset_imports[contract.DOMAIN] = contract.VERSION
        return ir.passes.PassResult(model, modified=bool(self.quantized))

    def _quantize_operands(self, node: ir.Node) -> None:
        if _reduction_is_one(node):
            self.skipped.append((node.name, "reduction length 1"))
            return
        operands = [_before_scaling(node.inputs[0], True), _before_scaling(node.inputs[1], False)]
        if all(_is_quantized(value) for value, _, _ in operands):
            return  # done by an earlier run
        right = operands[1][0]
        if right.shape is None or len(right.shape) < 2:
            self.skipped.append((node.name, "rank of the right operand is unknown"))
            return
        names = []
        for side, (value, reader, index) in enumerate(operands):
            reader, index = (node, side) if reader is None else (reader, index)
            rank = None if side == 0 else len(value.shape)
            nodes, quantized = self._quantize(node, side, value, rank)
            reader.graph.insert_before(reader, nodes)
            reader.replace_input_with(index, quantized)
            names.append(value.name or f"input {side}")
        self.quantized[node.name] = names

    def _quantize(
        self, node: ir.Node, side: int, value: ir.Value, rank: int | None
    ) -> tuple[list[ir.Node], ir.Value]:
        """Nodes that fake-quantize ``value`` along the matmul's reduction axis, and the
        quantized value."""
        prefix = f"{node.name}/in{side}"
        attrs = {"format": self.format}
        if rank is None:  # left operand: the reduction axis is already the last
            q = ir.node(
                contract.QUANTIZE, [value], attrs, domain=contract.DOMAIN, name=prefix + "/amx_q"
            )
            q.outputs[0].type, q.outputs[0].shape = value.type, value.shape
            return [q], q.outputs[0]
        perm = _swap_last_two(rank)
        t = ir.node("Transpose", [value], {"perm": perm}, name=prefix + "/amx_T")
        q = ir.node(
            contract.QUANTIZE, [t.outputs[0]], attrs, domain=contract.DOMAIN, name=prefix + "/amx_q"
        )
        back = ir.node("Transpose", [q.outputs[0]], {"perm": perm}, name=prefix + "/amx_T_back")
        back.outputs[0].type, back.outputs[0].shape = value.type, value.shape
        return [t, q, back], back.outputs[0]
