"""Find the linear layers of a graph: MatMul / Gemm nodes whose weight is a constant.

A linear layer is ``Y = X @ W (+ b)`` with W a constant [K, N] (an initializer, possibly
behind Transpose / Cast / Reshape) and X an activation of any rank >= 2. Gemm's transA /
transB / alpha / beta / C are folded in, as is a following Add of a constant per-column
bias. Everything that does not fit is listed with the reason it was left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from .constants import constant_array, constant_source

DEFAULT_HEAD_PATTERN = r"lm_head"
# ops between a head and the graph output that keep it the head (casts, reshapes, soft-caps)
_HEAD_TAIL_OPS = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Mul", "Div", "Tanh"}


@dataclass
class LinearLayer:
    node: ir.Node  # the MatMul or Gemm
    x: ir.Value  # the activation
    weight_source: ir.Value  # the initializer (or Constant output) holding the weight
    weight_chain: list[ir.Node]  # Transpose/Cast/Reshape nodes from the source to the node
    k: int
    n: int
    transpose_weight: bool = False  # Gemm transB
    transpose_x: bool = False  # Gemm transA
    alpha: float = 1.0
    bias: np.ndarray | None = None  # [N], beta applied
    bias_value: ir.Value | None = None  # an existing [N] initializer to reuse as the bias
    bias_add: ir.Node | None = None  # a following Add folded into the layer
    output: ir.Value = field(default=None)  # what the replacement must produce

    @property
    def name(self) -> str:
        return self.node.name or self.output.name

    @property
    def weight_name(self) -> str:
        return self.weight_source.name or self.name

    def weight_nk(self) -> np.ndarray:
        """The weight as [N, K] (each output's K values contiguous), alpha applied."""
        w = constant_array(self.weight_source, self.weight_chain)
        w = w if self.transpose_weight else w.T  # Gemm's transB weight is already [N, K]
        if self.alpha != 1.0:
            w = w.astype(np.float32) * np.float32(self.alpha)
        return np.ascontiguousarray(w)

    @property
    def stored_bytes(self) -> int:
        tensor = self.weight_source.const_value
        if tensor is None:
            tensor = self.weight_source.producer().attributes["value"].value
        return tensor.size * tensor.dtype.itemsize


@dataclass
class Skipped:
    name: str
    reason: str


def _attr(node: ir.Node, name: str, default):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _rank(value: ir.Value) -> int | None:
    return None if value.shape is None else len(value.shape)


def _weight_shape(source: ir.Value, chain: list[ir.Node]) -> tuple[int, ...]:
    if not chain:
        tensor = source.const_value
        if tensor is None:
            tensor = source.producer().attributes["value"].value
        return tuple(tensor.shape.numpy())
    return constant_array(source, chain).shape


def _per_column(array: np.ndarray, n: int) -> np.ndarray | None:
    """``array`` as a [N] bias if it broadcasts as one value per output column."""
    if array.size == n and (array.ndim == 1 or all(d == 1 for d in array.shape[:-1])):
        return array.reshape(n)
    if array.size == 1:
        return np.full(n, array.reshape(()), dtype=array.dtype)
    return None


def _single_consumer(value: ir.Value) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def _following_bias_add(output: ir.Value, n: int):
    """A following ``Add(Y, b)`` with b constant per column: (node, bias, bias value)."""
    add = _single_consumer(output)
    if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
        return None
    other = add.inputs[1] if add.inputs[0] is output else add.inputs[0]
    found = constant_source(other)
    if found is None:
        return None
    bias = _per_column(constant_array(*found), n)
    if bias is None:
        return None
    reuse = other if (not found[1] and other.shape is not None and len(other.shape) == 1) else None
    return add, bias, reuse


def feeds_graph_output(value: ir.Value, depth: int = 4) -> bool:
    """True if value is a graph output, or reaches one through a few cast/reshape-like ops."""
    for _ in range(depth + 1):
        if value.is_graph_output():
            return True
        consumer = _single_consumer(value)
        if consumer is None or consumer.op_type not in _HEAD_TAIL_OPS or not consumer.outputs:
            return False
        value = consumer.outputs[0]
    return False


def _match_matmul(node: ir.Node) -> LinearLayer | Skipped | None:
    a, b = node.inputs[0], node.inputs[1]
    found = constant_source(b)
    if found is None:
        if b is not None and b.is_graph_input() and constant_source(a) is None and _rank(b) == 2:
            return Skipped(node.name, f"weight {b.name!r} is a graph input, not a constant")
        if constant_source(a) is not None:
            return Skipped(node.name, "the constant is the left operand")
        return None  # activation x activation (attention): not a linear layer
    shape = _weight_shape(*found)
    if len(shape) != 2:
        return Skipped(node.name, f"weight of rank {len(shape)} (only 2-D weights are linear)")
    k, n = shape
    return LinearLayer(node, a, found[0], found[1], k, n, output=node.outputs[0])


def _match_gemm(node: ir.Node) -> LinearLayer | Skipped | None:
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    found = constant_source(b)
    if found is None:
        return Skipped(node.name, "Gemm weight B is not a constant")
    shape = _weight_shape(*found)
    trans_b = bool(_attr(node, "transB", 0))
    n, k = shape if trans_b else shape[::-1]
    layer = LinearLayer(
        node, a, found[0], found[1], k, n,
        transpose_weight=trans_b,
        transpose_x=bool(_attr(node, "transA", 0)),
        alpha=float(_attr(node, "alpha", 1.0)),
        output=node.outputs[0],
    )  # fmt: skip
    if c is not None:
        c_found = constant_source(c)
        bias = None if c_found is None else _per_column(constant_array(*c_found), n)
        if bias is None:
            return Skipped(node.name, "Gemm's C is not a constant with one value per column")
        beta = float(_attr(node, "beta", 1.0))
        layer.bias = bias if beta == 1.0 else (bias.astype(np.float32) * np.float32(beta))
    return layer


def find_linear_layers(
    graph: ir.Graph,
    exclude: list[str] | tuple[str, ...] = (),
    include_head: bool = False,
) -> tuple[list[LinearLayer], list[Skipped]]:
    """The graph's linear layers to quantize, and those left alone with the reason."""
    patterns = [re.compile(p) for p in exclude]
    layers: list[LinearLayer] = []
    skipped: list[Skipped] = []
    for node in graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm"):
            continue
        match = _match_matmul(node) if node.op_type == "MatMul" else _match_gemm(node)
        if match is None:
            continue
        if isinstance(match, Skipped):
            skipped.append(match)
            continue
        if match.bias is None:
            folded = _following_bias_add(match.output, match.n)
            if folded is not None:
                match.bias_add, match.bias, match.bias_value = folded
                match.output = match.bias_add.outputs[0]
        names = (match.name, match.weight_name)
        hit = next((p.pattern for p in patterns if any(p.search(s) for s in names)), None)
        if hit is not None:
            skipped.append(Skipped(match.name, f"excluded by --exclude {hit!r}"))
        elif not include_head and (
            re.search(DEFAULT_HEAD_PATTERN, " ".join(names)) or feeds_graph_output(match.output)
        ):
            skipped.append(Skipped(match.name, "language-model head (kept in full precision)"))
        else:
            layers.append(match)
    return layers, skipped
