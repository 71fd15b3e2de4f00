"""Find the linear layers of a model: MatMul / Gemm / FusedMatMul nodes whose weight is a constant.

A linear layer is ``Y = X @ W (+ b)`` with W a constant [K, N] (an initializer, possibly
behind Transpose / Cast / Reshape) and X a float activation. Gemm's transA / transB / alpha /
beta / C and com.microsoft FusedMatMul's transA / transB / alpha are folded in, as is a
following Add of a constant per-column bias. Layers inside If / Loop / Scan bodies count too.
Everything that looks like a linear layer but is left alone is reported with the reason, and
so are the weights held inside fused ops (com.microsoft Attention, MatMulNBits, ...).

The layers are matched one node at a time, just before each is rewritten (``match_linear``),
so a chain of linears (one feeding the next) always sees the graph as it is at that moment.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from .constants import constant_array, constant_meta, constant_source

DEFAULT_HEAD_PATTERN = r"lm_head"
# ops between a head and the graph output that keep it the head (casts, reshapes, soft-caps)
_HEAD_TAIL_OPS = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Mul", "Div", "Tanh"}
DEFAULT_DOMAINS = ("", "ai.onnx")
MICROSOFT = "com.microsoft"
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), ir.DataType.BFLOAT16.numpy())
FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)

# Fused ops that hold a linear layer's float weight themselves, so there is no MatMul to
# rewrite: (domain, op type) -> (index of the weight input, why it stays).
FUSED_WEIGHT_OPS = {
    (MICROSOFT, "Attention"): (1, "q/k/v projections fused into com.microsoft.Attention"),
    (MICROSOFT, "QAttention"): (1, "q/k/v projections fused into com.microsoft.QAttention"),
    (MICROSOFT, "MatMulNBits"): (1, "already quantized (com.microsoft.MatMulNBits)"),
    (MICROSOFT, "DynamicQuantizeMatMul"): (1, "already quantized (DynamicQuantizeMatMul)"),
    (MICROSOFT, "MatMulIntegerToFloat"): (1, "already quantized (MatMulIntegerToFloat)"),
    (MICROSOFT, "QGemm"): (3, "already quantized (com.microsoft.QGemm)"),
    ("", "MatMulInteger"): (1, "already quantized (MatMulInteger)"),
    ("", "QLinearMatMul"): (3, "already quantized (QLinearMatMul)"),
}


def is_linear_op(node: ir.Node) -> bool:
    if node.domain in DEFAULT_DOMAINS:
        return node.op_type in ("MatMul", "Gemm")
    return (node.domain, node.op_type) == (MICROSOFT, "FusedMatMul")


def _domain(node: ir.Node) -> str:
    return "" if node.domain == "ai.onnx" else node.domain


@dataclass
class LinearLayer:
    node: ir.Node  # the MatMul, Gemm or FusedMatMul
    x: ir.Value  # the activation
    weight_source: ir.Value  # the initializer (or Constant output) holding the weight
    weight_chain: list[ir.Node]  # Transpose/Cast/Reshape nodes from the source to the node
    k: int
    n: int
    transpose_weight: bool = False  # Gemm / FusedMatMul transB
    transpose_x: bool = False  # Gemm / FusedMatMul transA
    alpha: float = 1.0
    bias: np.ndarray | None = None  # [N], beta applied
    bias_value: ir.Value | None = None  # an existing [N] initializer to reuse as the bias
    bias_add: ir.Node | None = None  # a following Add folded into the layer
    addend: ir.Value | None = None  # Gemm's C when it is not per-column: added after
    addend_scale: float = 1.0  # Gemm's beta for that addend
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
        w = w if self.transpose_weight else w.T  # a transB weight is already [N, K]
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
    weight: str = ""


def _attr(node: ir.Node, name: str, default):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _rank(value: ir.Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


def _per_column(array: np.ndarray, n: int, out_rank: int | None) -> np.ndarray | None:
    """``array`` as a [N] bias if adding it to a [..., N] output of rank ``out_rank`` is the
    same as adding one value per output column (it must not broadcast the output up)."""
    if out_rank is None:
        if array.ndim > 1:
            return None  # could add a leading axis to an output of unknown rank
    elif array.ndim > out_rank:
        return None
    if array.size == n and all(d == 1 for d in array.shape[:-1]):
        return array.reshape(n)
    if array.size == 1:
        return np.full(n, array.reshape(()), dtype=array.dtype)
    return None


def _single_consumer(value: ir.Value) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def _out_rank(layer: LinearLayer) -> int | None:
    if layer.node.op_type == "Gemm":
        return 2
    rank = _rank(layer.output)
    return rank if rank is not None else _rank(layer.x)


def _following_bias_add(layer: LinearLayer):
    """A following ``Add(Y, b)`` with b constant per column: (node, bias, reusable value)."""
    add = _single_consumer(layer.output)
    if add is None or add.op_type != "Add" or add.domain not in DEFAULT_DOMAINS:
        return None
    if add.graph is not layer.node.graph:
        return None
    other = add.inputs[1] if add.inputs[0] is layer.output else add.inputs[0]
    found = constant_source(other)
    if found is None:
        return None
    bias = _per_column(constant_array(*found), layer.n, _out_rank(layer))
    if bias is None:
        return None
    exact = not found[1] and other.is_initializer() and tuple(other.shape or ()) == (layer.n,)
    return add, bias, other if exact else None


def _check_weight(node: ir.Node, found, x: ir.Value) -> tuple[tuple[int, ...], Skipped | None]:
    """The weight's shape, or why a layer with this weight is not rewritten."""
    try:
        shape, dtype = constant_meta(*found)
    except ValueError as error:
        return (), Skipped(node.name, f"weight chain does not apply: {error}")
    if len(shape) != 2:
        return shape, Skipped(node.name, f"weight of rank {len(shape)} (only 2-D is linear)")
    if dtype not in FLOAT_DTYPES:
        kind = "integer" if np.issubdtype(dtype, np.integer) else str(dtype)
        return shape, Skipped(
            node.name,
            f"{kind} weight ({dtype.name}): amx.MatMul takes float32, float16 or bfloat16",
        )
    if x.dtype is not None and x.dtype not in FLOAT_TYPES:
        return shape, Skipped(node.name, f"activation {x.name!r} is {x.dtype}, not a float")
    if 0 in shape:
        return shape, Skipped(node.name, f"empty weight {list(shape)}")
    return shape, None


def _match_matmul(node: ir.Node) -> LinearLayer | Skipped | None:
    a, b = node.inputs[0], node.inputs[1]
    found = constant_source(b)
    if found is None:
        if b is not None and b.is_graph_input() and constant_source(a) is None and _rank(b) == 2:
            return Skipped(node.name, f"weight {b.name!r} is a graph input, not a constant")
        if constant_source(a) is not None:
            return Skipped(node.name, "the constant is the left operand (W @ X)")
        return None  # activation x activation (attention): not a linear layer
    shape, why = _check_weight(node, found, a)
    if why is not None:
        return why
    k, n = shape
    return LinearLayer(node, a, found[0], found[1], k, n, output=node.outputs[0])


def _gemm_like(node: ir.Node, trans_a: bool, trans_b: bool) -> LinearLayer | Skipped | None:
    """Gemm and FusedMatMul: Y = alpha * A' @ B' with B' a constant."""
    a, b = node.inputs[0], node.inputs[1]
    found = constant_source(b)
    if found is None:
        return Skipped(node.name, f"{node.op_type} weight B is not a constant")
    shape, why = _check_weight(node, found, a)
    if why is not None:
        return why
    n, k = shape if trans_b else shape[::-1]
    return LinearLayer(
        node, a, found[0], found[1], k, n,
        transpose_weight=trans_b,
        transpose_x=trans_a,
        alpha=float(_attr(node, "alpha", 1.0)),
        output=node.outputs[0],
    )  # fmt: skip


def _match_gemm(node: ir.Node) -> LinearLayer | Skipped | None:
    layer = _gemm_like(node, bool(_attr(node, "transA", 0)), bool(_attr(node, "transB", 0)))
    c = node.inputs[2] if len(node.inputs) > 2 else None
    if not isinstance(layer, LinearLayer) or c is None:
        return layer
    beta = float(_attr(node, "beta", 1.0))
    c_found = constant_source(c)
    bias = None if c_found is None else _per_column(constant_array(*c_found), layer.n, 2)
    if bias is None:  # C broadcasts over rows too (or is computed): added after the layer
        layer.addend, layer.addend_scale = c, beta
    else:
        layer.bias = bias if beta == 1.0 else (bias.astype(np.float32) * np.float32(beta))
    return layer


def _match_fused_matmul(node: ir.Node) -> LinearLayer | Skipped | None:
    """com.microsoft FusedMatMul: MatMul(A', B') * alpha (ORT's optimized graphs)."""
    if _attr(node, "transBatchA", 0) or _attr(node, "transBatchB", 0):
        return Skipped(node.name, "FusedMatMul with transBatchA/transBatchB")
    trans_a = bool(_attr(node, "transA", 0))
    if trans_a and _rank(node.inputs[0]) is None:
        return Skipped(node.name, "FusedMatMul transA on an input of unknown rank")
    return _gemm_like(node, trans_a, bool(_attr(node, "transB", 0)))


def match_linear(node: ir.Node) -> LinearLayer | Skipped | None:
    """The linear layer at ``node`` (bias Add included), why it is left alone, or None when
    the node is no linear layer at all (an activation-by-activation MatMul)."""
    if node.op_type == "MatMul":
        match = _match_matmul(node)
    elif node.op_type == "Gemm":
        match = _match_gemm(node)
    else:
        match = _match_fused_matmul(node)
    if isinstance(match, LinearLayer) and match.bias is None and match.addend is None:
        folded = _following_bias_add(match)
        if folded is not None:
            match.bias_add, match.bias, match.bias_value = folded
            match.output = match.bias_add.outputs[0]
    return match


def fused_weights(node: ir.Node) -> Skipped | None:
    """A linear weight held inside a fused op (reported: there is no MatMul to rewrite)."""
    entry = FUSED_WEIGHT_OPS.get((_domain(node), node.op_type))
    if entry is None:
        return None
    index, reason = entry
    weight = node.inputs[index] if len(node.inputs) > index else None
    if weight is None or constant_source(weight) is None:
        return None
    return Skipped(node.name, reason, weight.name)


class ModelFacts:
    """What the head rule needs from the whole model: the embedding tables (a Gather along
    axis 0 of a 2-D float constant by integer ids) and which node holds each subgraph."""

    def __init__(self, model: ir.Model):
        self.graph = model.graph
        self.tables: list[ir.Value] = []
        self.vocab_sizes: set[int] = set()
        self.owners: dict[int, ir.Node] = {}
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            for attribute in node.attributes.values():
                if attribute.type == ir.AttributeType.GRAPH:
                    self.owners[id(attribute.value)] = node
                elif attribute.type == ir.AttributeType.GRAPHS:
                    self.owners.update((id(g), node) for g in attribute.value)
            if node.op_type == "Gather" and node.domain in DEFAULT_DOMAINS:
                found = constant_source(node.inputs[0])
                if found is not None and _attr(node, "axis", 0) == 0:
                    with contextlib.suppress(ValueError):  # a chain that does not apply
                        shape, dtype = constant_meta(*found)
                        if len(shape) == 2 and dtype in FLOAT_DTYPES:
                            self.tables.append(found[0])
                            self.vocab_sizes.add(shape[0])

    def tied_table(self, source: ir.Value) -> ir.Value | None:
        return next((t for t in self.tables if t is source), None)

    def reached_output(self, value: ir.Value, depth: int = 4) -> str | None:
        """The model output ``value`` becomes, through a few cast/reshape-like ops and out of
        If branches; None if it does not."""
        for _ in range(depth + 1):
            if value.is_graph_output():
                graph = value.graph
                if graph is self.graph:
                    return value.name
                owner = self.owners.get(id(graph))
                if owner is None or owner.op_type != "If":
                    return None
                value = owner.outputs[list(graph.outputs).index(value)]
                continue
            consumer = _single_consumer(value)
            if consumer is None or consumer.op_type not in _HEAD_TAIL_OPS or not consumer.outputs:
                return None
            value = consumer.outputs[0]
        return None

    def head_reason(self, layer: LinearLayer) -> str | None:
        """Why ``layer`` is the language-model head, or None: it is named so, its weight is
        an embedding table (tied), or it has N = the vocabulary and gives a model output."""
        names = (layer.name, layer.weight_name)
        if any(re.search(DEFAULT_HEAD_PATTERN, name) for name in names):
            return "language-model head, named lm_head (kept in full precision)"
        table = self.tied_table(layer.weight_source)
        if table is not None:
            return (
                f"language-model head, tied to the embedding {table.name!r} (kept in full "
                "precision)"
            )
        if layer.n in self.vocab_sizes:
            output = self.reached_output(layer.output)
            if output is not None:
                return (
                    f"language-model head, N = {layer.n} (the vocabulary) gives output "
                    f"{output!r} (kept in full precision)"
                )
        return None


def where(node: ir.Node, facts: ModelFacts) -> str:
    """A node's name, after the subgraphs that hold it: ``If_0.then_branch: /model/...``."""
    name, graph = node.name or node.op_type, node.graph
    while graph is not None and graph is not facts.graph:
        owner = facts.owners.get(id(graph))
        if owner is None:
            break
        branch = next(
            (a.name for a in owner.attributes.values()
             if a.type == ir.AttributeType.GRAPH and a.value is graph),
            "body",
        )  # fmt: skip
        name = f"{owner.name or owner.op_type}.{branch}: {name}"
        graph = owner.graph
    return name
