"""FuseRotaryPass: rotary position embedding as one com.microsoft.RotaryEmbedding node.

transformers' ``apply_rotary_pos_emb`` exports as eight ops for each of Q and K:

    x1, x2 = the halves of x's last axis (two Slices, or a Split)
    out = x * cos + Concat(-x2, x1) * sin

with cos and sin [b, 1, s, d], an Unsqueeze at axis 1 of [b, s, d] tables computed once per
step from the positions: Cos / Sin of ``Concat(f, f)`` (the same frequencies twice), maybe
scaled and cast. onnxruntime's contrib RotaryEmbedding does the same in one kernel that reads
rows of a [rows, d / 2] cache by position id (SmolLM2: 1,792 -> 1,439 nodes a step). The
cache here is the first half of the graph's own tables, reshaped to [b * s, d / 2], and the
ids ``i * s + j`` pick row (i, j): no maximum-position table to size, and the same cos / sin
bits as the unfused graph. The kernel computes ``x1 cos - x2 sin`` with FMA, so an output
may differ from the unfused graph's by one float32 rounding.

Matched only where the graph shows that this is what it computes: x [b, h, s, d] with d
static and even; its halves by two Slices or a two-way Split of the last axis, their bounds
constant or fixed by x's static last axis (TorchScript's and Optimum's ``x.shape[-1] // 2``,
``matching.static_ints``); cos and sin Unsqueeze(axis 1) of [b, s, d] values (b and s x's
or 1), whose two halves are equal (traced to ``Concat(f, f)`` on the last axis through Cos,
Sin, Cast, Identity, Neg and Mul / Div by a scalar constant). Anything else stays as it is.
The main graph only (a merged decoder's If branches keep their ops). For onnxruntime only:
TensorRT's ONNX parser has no importer for the contrib op.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from .constants import scaled_input
from .matching import dims_of, producer_of, same_dim, static_ints, unsqueeze_axes
from .names import ModelNames

MS_DOMAIN = "com.microsoft"
HALF_PRESERVING = ("Cos", "Sin", "Cast", "Identity", "Neg")  # elementwise, one input
TRACE_DEPTH = 8
# the element types onnxruntime's CPU kernel has (bfloat16 is CUDA-only; no double)
KERNEL_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16)


@dataclass
class Rotation:
    """``out = x * cos + rotate_half(x) * sin`` found at the Add making ``out``."""

    add: ir.Node
    x: ir.Value
    cos: ir.Value  # the [b, s, d] tables (before the Unsqueeze)
    sin: ir.Value
    half: int


def _last_axis(axis: int | None, rank: int) -> bool:
    return axis is not None and axis % rank == rank - 1


def _slice_half(value: ir.Value | None, half: int) -> tuple[ir.Value, int] | None:
    """(x, 0) for Slice(x)[..., :half], (x, 1) for Slice(x)[..., half:]."""
    node = producer_of(value, "Slice")
    if node is None or len(node.inputs) < 4:
        return None
    starts, ends, axes = (static_ints(node.inputs[i]) for i in (1, 2, 3))
    steps = static_ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else [1]
    if None in (starts, ends, axes, steps) or len(starts) != 1 or steps != [1]:
        return None
    if not _last_axis(axes[0], 4):
        return None
    if starts == [0] and ends == [half]:
        return node.inputs[0], 0
    if starts == [half] and ends[0] >= 2 * half:
        return node.inputs[0], 1
    return None


def _split_half(value: ir.Value | None, half: int) -> tuple[ir.Value, int] | None:
    """(x, i) for output i of a two-way Split of x's last axis into equal halves."""
    node = producer_of(value, "Split")
    if node is None or len(node.outputs) != 2:
        return None
    axis = node.attributes.get("axis")
    if not _last_axis(axis.value if axis is not None else 0, 4):
        return None
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        sizes = static_ints(node.inputs[1])
    elif "split" in node.attributes:
        sizes = list(node.attributes["split"].value)
    else:
        sizes = [half, half]  # equal parts (num_outputs = 2 from opset 18)
    if sizes != [half, half]:
        return None
    return node.inputs[0], list(node.outputs).index(value)


def _half_of(value: ir.Value | None, half: int) -> tuple[ir.Value, int] | None:
    return _slice_half(value, half) or _split_half(value, half)


def _rotated(value: ir.Value | None, half: int) -> ir.Value | None:
    """x where ``value`` is Concat(-x[..., half:], x[..., :half]) on the last axis."""
    concat = producer_of(value, "Concat")
    if concat is None or len(concat.inputs) != 2:
        return None
    axis = concat.attributes.get("axis")
    if axis is None or not _last_axis(axis.value, 4):
        return None
    neg = producer_of(concat.inputs[0], "Neg")
    second = _half_of(neg.inputs[0], half) if neg else None
    first = _half_of(concat.inputs[1], half)
    if second is None or first is None or second[1] != 1 or first[1] != 0:
        return None
    return first[0] if first[0] is second[0] else None


def _halves_equal(value: ir.Value, depth: int = TRACE_DEPTH) -> bool:
    """Whether the last axis of ``value`` is two equal halves: Concat(f, f) on it, behind
    elementwise ops that treat every element alike."""
    node = value.producer()
    if node is None or depth == 0:
        return False
    if producer_of(value, "Concat"):
        axis = node.attributes.get("axis")
        rank = len(value.shape) if value.shape is not None else None
        return (
            rank is not None and axis is not None and _last_axis(axis.value, rank)
            and len(node.inputs) == 2 and node.inputs[0] is node.inputs[1]
        )  # fmt: skip
    if producer_of(value, *HALF_PRESERVING):
        return _halves_equal(node.inputs[0], depth - 1)
    index = scaled_input(node)  # a Mul / Div by a scalar constant
    return index is not None and _halves_equal(node.inputs[index], depth - 1)


def _table(value: ir.Value | None, x_dims: list) -> ir.Value | None:
    """The [b', s', d] table behind a cos / sin operand Unsqueeze(table, 1) of x [b, h, s, d]
    (b' is b or 1 and s' is s or 1: the product broadcasts them, see _position_ids)."""
    node = producer_of(value, "Unsqueeze")
    if node is None or unsqueeze_axes(node) not in ([1], [-3]):
        return None
    table = node.inputs[0]
    dims = dims_of(table, 3)
    if dims is None or dims[2] != x_dims[3]:
        return None
    for have, want in zip(dims[:2], (x_dims[0], x_dims[2]), strict=True):
        if isinstance(have, int) and have != 1 and not same_dim(have, want):
            return None  # a table that would broadcast x up: not a rotation of x
    return table if _halves_equal(table) else None


def _match(add: ir.Node) -> Rotation | None:
    products = [producer_of(v, "Mul") for v in add.inputs]
    if len(products) != 2 or None in products:
        return None
    for cos_mul, sin_mul in (products, products[::-1]):
        for x, cos in (cos_mul.inputs, cos_mul.inputs[::-1]):
            dims = dims_of(x, 4) if x is not None else None
            if dims is None or not isinstance(dims[3], int) or dims[3] % 2 or dims[3] < 2:
                continue
            if x.dtype not in KERNEL_TYPES:
                continue
            half = dims[3] // 2
            for rotated, sin in (sin_mul.inputs, sin_mul.inputs[::-1]):
                if _rotated(rotated, half) is not x:
                    continue
                cos_table, sin_table = _table(cos, dims), _table(sin, dims)
                if cos_table is not None and sin_table is not None:
                    return Rotation(add, x, cos_table, sin_table, half)
    return None


class FuseRotaryPass(ir.passes.InPlacePass):
    """Replace each matched rotation (module docstring) with com.microsoft.RotaryEmbedding;
    the main graph only. ``fused`` names the Add nodes replaced."""

    def __init__(self):
        super().__init__()
        self.fused: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.fused = []
        self._caches: dict[int, ir.Value] = {}
        self._ids: dict[tuple, ir.Value] = {}
        self._constants: dict[tuple, ir.Value] = {}
        self._names = ModelNames(model)  # clear of the model's own names, subgraphs included
        graph = model.graph
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type != "Add":
                continue
            rotation = _match(node)
            if rotation is not None:
                self._fuse(graph, rotation)
                self.fused.append(node.name)
        if self.fused and MS_DOMAIN not in model.opset_imports:
            model.opset_imports[MS_DOMAIN] = 1
        return ir.passes.PassResult(model, modified=bool(self.fused))

    def _constant(self, graph: ir.Graph, values: tuple[int, ...], scalar=False) -> ir.Value:
        key = (values, scalar)
        if key not in self._constants:
            data = np.array(values[0] if scalar else values, np.int64)
            name = self._names.fresh("amx_rotary_" + ("scalar_" if scalar else "") + "_".join(
                str(v).replace("-", "m") for v in values
            ))
            value = ir.Value(name=name, const_value=ir.tensor(data, name=name))
            value.shape, value.type = ir.Shape(data.shape), ir.TensorType(ir.DataType.INT64)
            graph.register_initializer(value)
            self._constants[key] = value
        return self._constants[key]

    def _add(self, graph: ir.Graph, op: str, inputs: list, name: str, **attributes) -> ir.Value:
        node = ir.node(op, inputs, attributes=attributes or None, name=name)
        graph.append(node)  # placed by the topological sort of CleanupPass
        return node.outputs[0]

    def _position_ids(self, graph: ir.Graph, table: ir.Value, x: ir.Value) -> ir.Value:
        """[b, s] ids 0 .. b' * s' - 1 in row order: row (i, j) of the reshaped cache; one set
        for all tables of the same b' and s' (Gemma 3's local and global ones). Where the
        table's [b', s'] is not known to be x's [b, s] (TorchScript's and Optimum's tables
        lose the symbols), the ids are expanded to x's [b, s]: each of b', s' is x's or 1
        (else the unfused products would not broadcast, or would grow x, which _table
        rules out where it is static), so a table row serves what the broadcast gave it."""
        table_dims, x_dims = dims_of(table, 3)[:2], dims_of(x, 4)
        same = same_dim(table_dims[0], x_dims[0]) and same_dim(table_dims[1], x_dims[2])
        key = (tuple(d if d is not None else id(table) for d in table_dims),
               None if same else tuple(d if d is not None else id(x) for d in x_dims[::2]))
        if key not in self._ids:
            name = f"amx_rotary_ids_{len(self._ids)}"
            shape = self._add(graph, "Shape", [table], f"{name}/shape")
            batch_seq = self._add(
                graph, "Slice",
                [shape, self._constant(graph, (0,)), self._constant(graph, (2,))],
                f"{name}/batch_seq",
            )  # fmt: skip
            rows = self._add(graph, "ReduceProd", [batch_seq], f"{name}/rows", keepdims=0)
            zero, one = self._constant(graph, (0,), True), self._constant(graph, (1,), True)
            flat = self._add(graph, "Range", [zero, rows, one], f"{name}/range")
            ids = self._add(graph, "Reshape", [flat, batch_seq], name)
            if not same:
                x_shape = self._add(graph, "Shape", [x], f"{name}/x_shape")
                x_batch_seq = self._add(
                    graph, "Gather", [x_shape, self._constant(graph, (0, 2))],
                    f"{name}/x_batch_seq", axis=0,
                )  # fmt: skip
                ids = self._add(graph, "Expand", [ids, x_batch_seq], f"{name}/expand")
            ids.type = ir.TensorType(ir.DataType.INT64)
            ids.shape = ir.Shape([x_dims[0], x_dims[2]])
            self._ids[key] = ids
        return self._ids[key]

    def _cache(self, graph: ir.Graph, table: ir.Value, half: int) -> ir.Value:
        """The table's first half as [b * s, d / 2] rows."""
        key = id(table)
        if key not in self._caches:
            name = f"amx_rotary_cache_{len(self._caches)}"
            first = self._add(
                graph, "Slice",
                [table, self._constant(graph, (0,)), self._constant(graph, (half,)),
                 self._constant(graph, (-1,))],
                f"{name}/half",
            )  # fmt: skip
            cache = self._add(graph, "Reshape", [first, self._constant(graph, (-1, half))], name)
            cache.type, cache.shape = table.type, ir.Shape([None, half])
            self._caches[key] = cache
        return self._caches[key]

    def _fuse(self, graph: ir.Graph, rotation: Rotation) -> None:
        add = rotation.add
        ids = self._position_ids(graph, rotation.cos, rotation.x)
        cos = self._cache(graph, rotation.cos, rotation.half)
        sin = self._cache(graph, rotation.sin, rotation.half)
        node = ir.node(
            "RotaryEmbedding", [rotation.x, ids, cos, sin], domain=MS_DOMAIN,
            attributes={"interleaved": 0}, name=f"{add.name or 'rotary'}/amx_rotary",
        )  # fmt: skip
        graph.insert_after(add, node)
        old, new = add.outputs[0], node.outputs[0]
        new.type, new.shape = old.type or rotation.x.type, old.shape or rotation.x.shape
        old.replace_all_uses_with(new, replace_graph_outputs=True)
        if old.name is not None:
            original, old.name = old.name, f"{old.name}_unfused"
            new.name = original
