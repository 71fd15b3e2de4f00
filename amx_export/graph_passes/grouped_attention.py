"""GroupedAttentionPass: grouped-query attention without the copy of the keys and values.

transformers' ``repeat_kv`` exports as ``Reshape(Expand(Unsqueeze(K, 2)))``: every query head
gets its own copy of its key/value head, so each decode step copies the whole past twice per
layer (a tenth of a SmolLM2 decode step). Query heads that share a KV head are consecutive
(head ``i`` reads KV head ``i // groups``), so stacking them as rows is a free view, and one
product per KV head gives the same numbers without the copy:

    Q [b, h, s, d] -> Reshape [0, kvh, -1, 0] = [b, kvh, groups * s, d]
    MatMul(Q, Kᵀ) [b, kvh, groups * s, t] -> Reshape [0, h, -1, 0] = [b, h, s, t]
    P [b, h, s, t] -> Reshape [0, kvh, -1, 0];  MatMul(P, V) -> Reshape [0, h, -1, 0]

Scaling, the mask and the Softmax stay 4-D as they were, and every dot product has the same
operands (float32 sums may be ordered differently). K may reach the MatMul through the
Transpose and the scalar Mul/Div of scaled dot-product attention (Optimum's graphs), and the
repeat may also feed a Shape whose Gather reads an axis other than the heads (Optimum's key
length): that Shape then reads K itself, so the copy goes. Q's head count is read from its
shape or, where onnx's inference lost it, from the ops that made Q (``_axis_size``). The row
reshapes keep the last axis, so ``QuantizeAttentionPass`` quantizes the same blocks.

A repeat is matched only where the shapes show it (KV heads and head_dim static, the Expand
adding only the group axis, the repeat's batch and length those of K, the query heads a
multiple of the KV heads); anything else is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .constants import scaled_input
from .matching import DEFAULT_DOMAINS, constant_ints, dims_of, producer_of, same_dim, unsqueeze_axes

SWAP_LAST_TWO = (0, 1, 3, 2)
HEAD_AXES = (1, -3)  # the axis of a [b, h, t, d] shape that grouping changes


def _unknown_or(dim, wanted) -> bool:
    """An Expand output's dimension: equal to ``wanted`` or not inferred (a symbol that
    onnx invented, such as unk__3, or none)."""
    return dim is None or dim == wanted or (isinstance(dim, str) and dim.startswith("unk__"))


@dataclass
class Repeat:
    """``repeated = repeat_kv(source)``, with source [b, kv_heads, t, d]."""

    repeated: ir.Value
    source: ir.Value
    kv_heads: int
    heads: int


def _repeat(value: ir.Value, query_heads: int | None) -> Repeat | None:
    """The repeat behind ``value``, a MatMul operand beside a Q of ``query_heads`` heads."""
    reshape = producer_of(value, "Reshape")
    expand = producer_of(reshape.inputs[0], "Expand") if reshape else None
    unsqueeze = producer_of(expand.inputs[0], "Unsqueeze") if expand else None
    if unsqueeze is None or unsqueeze_axes(unsqueeze) not in ([2], [-3]):
        return None
    source = unsqueeze.inputs[0]
    kv, expanded, repeated = dims_of(source, 4), dims_of(expand.outputs[0], 5), dims_of(value, 4)
    if kv is None or expanded is None or repeated is None:
        return None
    b, _, t, d = kv
    kv_heads = _axis_size(source, 1)  # TorchScript graphs: only the past's shape says it
    # where inference lost the repeat's heads, Q's: the product broadcasts the repeat's head
    # axis against Q's, so it has Q's heads, or 1 (then kv_heads = groups = 1, and a grouped
    # product over one KV head is the same broadcast)
    heads = repeated[1] if isinstance(repeated[1], int) else query_heads
    if not all(isinstance(x, int) for x in (kv_heads, d, heads)):
        return None
    if heads <= kv_heads or heads % kv_heads:
        return None
    # the Expand adds the group axis and nothing else; the Reshape merges it into the heads
    groups = heads // kv_heads
    wanted = [b, kv_heads, groups, t, d]
    if not all(_unknown_or(dim, want) for dim, want in zip(expanded, wanted, strict=True)):
        return None
    if not (same_dim(repeated[0], b) and same_dim(repeated[2], t) and repeated[3] == d):
        return None
    return Repeat(value, source, kv_heads, heads)


def _right_chain(
    value: ir.Value, query_heads: int | None
) -> tuple[list[tuple[ir.Node, int]], Repeat] | None:
    """The nodes from a repeat to the MatMul's right input: scalar Mul/Div and at most one
    Transpose of the last two axes, each read once, as (node, input index) from the MatMul
    back; and the repeat."""
    chain: list[tuple[ir.Node, int]] = []
    transposed = False
    while True:
        node = value.producer()
        if node is None or len(value.uses()) != 1 or value.is_graph_output():
            break
        index = scaled_input(node)
        if index is None and not transposed and producer_of(value, "Transpose"):
            perm = node.attributes.get("perm")
            if perm is None or tuple(perm.value) != SWAP_LAST_TWO:
                return None
            index, transposed = 0, True
        if index is None:
            break
        chain.append((node, index))
        value = node.inputs[index]
    repeat = _repeat(value, query_heads)
    return None if repeat is None else (chain, repeat)


ELEMENTWISE = ("Mul", "Add", "Sub", "Div", "Where")  # their inputs broadcast
PASS_THROUGH = ("Cast", "Identity", "Softmax", "Tanh", "Neg")  # the shape of their input
SEARCH_DEPTH = 8


def _axis_size(value: ir.Value, axis: int, depth: int = SEARCH_DEPTH) -> int | None:
    """The static size of ``value``'s ``axis``, from its shape or, where onnx's inference lost
    it (Optimum's Q: split by a Reshape whose target is computed, then rotated and scaled),
    from the ops that made it: an elementwise op has the size above 1 of any input, a
    Transpose its input's permuted axis, and a Reshape [b, s, L] -> [b, s, x, d] has x = L / d.
    """
    shape = value.shape
    if shape is None or not 0 <= axis < len(shape):
        return None
    if isinstance(shape[axis], int):
        return shape[axis]
    node = value.producer()
    if depth == 0 or node is None or node.domain not in DEFAULT_DOMAINS:
        return None
    if node.op_type in PASS_THROUGH:
        return _axis_size(node.inputs[0], axis, depth - 1)
    if node.op_type in ELEMENTWISE:
        for operand in node.inputs:  # broadcasting aligns the last axes
            if operand is None or operand.shape is None:
                continue
            aligned = axis - (len(shape) - len(operand.shape))
            size = _axis_size(operand, aligned, depth - 1) if aligned >= 0 else None
            if size is not None and size > 1:
                return size
        return None
    if node.op_type == "Concat":  # the KV cache: Concat(past, new) along the sequence
        concat_axis = node.attributes.get("axis")
        if concat_axis is None or concat_axis.value % len(shape) == axis:
            return None
        for operand in node.inputs:
            size = _axis_size(operand, axis, depth - 1) if operand is not None else None
            if size is not None:
                return size
        return None
    if node.op_type == "Transpose":
        perm = node.attributes.get("perm")
        return None if perm is None else _axis_size(node.inputs[0], perm.value[axis], depth - 1)
    if node.op_type == "Reshape":
        source = dims_of(node.inputs[0], 3)
        out = dims_of(value, 4)
        if source is None or out is None or axis != 2 or not isinstance(source[2], int):
            return None
        if not (same_dim(out[0], source[0]) and same_dim(out[1], source[1])):
            return None
        if isinstance(out[3], int) and out[3] > 0 and source[2] % out[3] == 0:
            return source[2] // out[3]
    return None


def _heads(value: ir.Value) -> int | None:
    """The head axis of a rank-4 value [b, h, s, d]."""
    return _axis_size(value, 1) if value.shape is not None and len(value.shape) == 4 else None


def _gathers_other_axes(shape_node: ir.Node) -> bool:
    """A Shape of a [b, h, t, d] value whose every reader is a Gather of one constant axis
    other than the heads: the same dimension is read from K itself."""
    if shape_node.attributes.get("start") or shape_node.attributes.get("end"):
        return False
    users = list(shape_node.outputs[0].uses())
    if not users or shape_node.outputs[0].is_graph_output():
        return False
    for user, index in users:
        if user.op_type != "Gather" or index != 0 or user.domain not in DEFAULT_DOMAINS:
            return False
        axis = user.attributes.get("axis")
        indices = constant_ints(user.inputs[1])
        if (axis is not None and axis.value != 0) or indices is None:
            return False
        if any(i in HEAD_AXES for i in indices):
            return False
    return True


def _with_heads(shape: ir.Shape | None, heads: int, rows=False) -> ir.Shape | None:
    """``shape`` with its head axis set to ``heads`` (and its rows unknown when ``rows``)."""
    if shape is None or len(shape) != 4:
        return None
    dims = list(shape)
    dims[1] = heads
    if rows:
        dims[2] = None
    return ir.Shape(dims)


class GroupedAttentionPass(ir.passes.InPlacePass):
    """Feed each Q·Kᵀ and P·V MatMul its KV head unrepeated (module docstring); the main
    graph only. ``grouped`` names the MatMuls changed."""

    def __init__(self):
        super().__init__()
        self.grouped: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.grouped = []
        self._shapes: dict[tuple[int, ...], ir.Value] = {}
        graph = model.graph
        for node in list(graph):
            if node.domain not in DEFAULT_DOMAINS or node.op_type != "MatMul":
                continue
            left, right = node.inputs
            if left is None or right is None or node.outputs[0].is_graph_output():
                continue
            query_heads = _heads(left)
            found = _right_chain(right, query_heads)
            if found is None:
                continue
            chain, repeat = found
            if query_heads != repeat.heads:
                continue
            self._group(graph, node, chain, repeat)
            self.grouped.append(node.name)
        return ir.passes.PassResult(model, modified=bool(self.grouped))

    def _shape(self, graph: ir.Graph, dims: tuple[int, ...]) -> ir.Value:
        if dims not in self._shapes:
            name = "amx_grouped_shape_" + "_".join(str(d).replace("-", "m") for d in dims)
            value = ir.Value(name=name, const_value=ir.tensor(np.array(dims, np.int64), name=name))
            value.shape, value.type = ir.Shape([len(dims)]), ir.TensorType(ir.DataType.INT64)
            graph.register_initializer(value)
            self._shapes[dims] = value
        return self._shapes[dims]

    def _group(
        self, graph: ir.Graph, node: ir.Node, chain: list[tuple[ir.Node, int]], repeat: Repeat
    ) -> None:
        name = node.name or "matmul"
        kv_heads, heads = repeat.kv_heads, repeat.heads
        # the right operand: the node that read the repeat reads K itself
        reader, index = chain[-1] if chain else (node, 1)
        reader.replace_input_with(index, repeat.source)
        for step, _ in chain:
            step.outputs[0].shape = _with_heads(step.outputs[0].shape, kv_heads)
        for user, index in list(repeat.repeated.uses()):
            if user.op_type == "Shape" and _gathers_other_axes(user):
                user.replace_input_with(index, repeat.source)
        # the left operand: the query heads of a KV head stacked as rows
        left = node.inputs[0]
        rows = ir.node(
            "Reshape", [left, self._shape(graph, (0, kv_heads, -1, 0))],
            name=f"{name}/amx_group_rows",
        )  # fmt: skip
        rows.outputs[0].type = left.type
        rows.outputs[0].shape = _with_heads(left.shape, kv_heads, rows=True)
        graph.insert_before(node, rows)
        node.replace_input_with(0, rows.outputs[0])
        # the product back to [b, h, s, t]
        product = node.outputs[0]
        back = ir.node(
            "Reshape", [product, self._shape(graph, (0, heads, -1, 0))],
            name=f"{name}/amx_ungroup",
        )  # fmt: skip
        graph.insert_after(node, back)
        result = back.outputs[0]
        result.type, result.shape = product.type, _with_heads(product.shape, heads)
        for user, index in list(product.uses()):
            if user is not back:
                user.replace_input_with(index, result)
        product.shape = _with_heads(product.shape, kv_heads, rows=True)
        if product.name is not None:
            original, product.name = product.name, f"{product.name}_grouped"
            result.name = original
