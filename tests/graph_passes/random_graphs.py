"""Random graphs of linear layers for the property test of the main command.

A graph is a chain of MatMul / Gemm layers on one activation, in float32, float16 or
bfloat16 (float32 at the graph's boundary, Casts inside): weights stored as [K, N] or [N, K]
behind a Transpose, a Reshape or a Cast, or read by Gemm with transB; Gemm with transA,
alpha, beta and C of every broadcast shape; bias Adds of every broadcast shape; Relu and
Reshape between layers; weights shared between layers (the same matrix, or one initializer in
both orientations). ``Layer`` keeps what the layer must compute, in float64 terms of the
original weights, so a test can hold the rewritten model to it layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = {
    "float32": (np.float32, TensorProto.FLOAT),
    "float16": (np.float16, TensorProto.FLOAT16),
    "bfloat16": (ml_dtypes.bfloat16, TensorProto.BFLOAT16),
}
ALPHAS = (1.0, 1.0, 0.5, 2.0, -1.25)


@dataclass
class Layer:
    x: str  # the activation's value name, which the rewrite keeps
    y: str  # the value the layer's result ends in (after a folded bias Add)
    w_nk: np.ndarray  # float64 [N, K], alpha applied, as the original graph computes it
    addend: np.ndarray | None = None  # float64, broadcast onto [.., N]: bias or beta * C


@dataclass
class RandomGraph:
    model: onnx.ModelProto
    input_shape: tuple[int, ...]
    layers: list[Layer] = field(default_factory=list)
    dtype: str = "float32"


class _Builder:
    def __init__(self, draw, dtype: str):
        self.draw, self.dtype = draw, dtype
        self.np_dtype, self.onnx_dtype = DTYPES[dtype]
        self.nodes, self.inits, self.layers = [], [], []
        self.weights: list[np.ndarray] = []  # float64 [K, N] matrices of earlier initializers
        self.weight_names: list[str] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def const(self, array: np.ndarray, base: str = "c", cast: bool = True) -> str:
        """An initializer in the graph's dtype (bfloat16 stored as float32 + Cast)."""
        name = self.name(base)
        if self.dtype == "bfloat16" and cast:
            self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
            return self.node("Cast", [name], to=self.onnx_dtype)
        self.inits.append(numpy_helper.from_array(array.astype(self.np_dtype), name))
        return name

    def rounded(self, array: np.ndarray) -> np.ndarray:
        """What the graph holds of ``array`` (rounded to its dtype), in float64."""
        return array.astype(self.np_dtype).astype(np.float64)

    def random(self, shape, scale: float = 1.0) -> np.ndarray:
        rng = np.random.default_rng(self.draw("seed", 0, 2**32 - 1))
        return self.rounded(rng.standard_normal(shape) * scale)

    def weight(self, k: int, n: int, trans_b: bool) -> tuple[str, np.ndarray]:
        """A weight input for [K, N] (or [N, K] with trans_b) and its float64 [K, N]."""
        for name, w in zip(self.weight_names, self.weights, strict=True):  # share an earlier one?
            if self.draw("share", 0, 2) == 0:
                if w.shape == (k, n) and not trans_b:
                    return name, w
                if w.shape == (n, k) and trans_b:
                    return name, w.T
                if w.shape == (n, k) and not trans_b:  # the same initializer, transposed
                    return self.node("Transpose", [name], perm=[1, 0]), w.T
        w_kn = self.random((k, n), 1 / np.sqrt(k))  # activations stay O(1) through the chain
        form = self.draw("weight form", 0, 3)
        if form == 1 and not trans_b:  # stored [N, K], transposed in the graph
            name = self.const(w_kn.T, "w")
            self.remember(name, w_kn.T)
            return self.node("Transpose", [name], perm=[1, 0]), w_kn
        stored = w_kn.T if trans_b else w_kn
        if form == 2:  # stored flat, reshaped in the graph
            flat = self.const(stored.reshape(-1), "w")
            shape = self.name("shape")
            self.inits.append(numpy_helper.from_array(np.array(stored.shape, np.int64), shape))
            return self.node("Reshape", [flat, shape]), w_kn
        name = self.const(stored, "w")
        self.remember(name, stored)
        return name, w_kn

    def remember(self, name: str, w: np.ndarray) -> None:
        self.weight_names.append(name)
        self.weights.append(w)

    def bias_shape(self, n: int, rows: tuple[int, ...]) -> tuple[int, ...]:
        """Every broadcast shape of a bias for a [*rows, N] output; some are not per column."""
        shapes = [(n,), (1, n), (1,), (), (1,) * len(rows) + (n,), (*rows[-1:], n)]
        if len(rows) + 1 < 4:
            shapes.append((1,) * (len(rows) + 1) + (n,))  # raises the output's rank
        return shapes[self.draw("bias shape", 0, len(shapes) - 1)]

    def foldable_only(self) -> bool:
        return self.dtype == "bfloat16"  # onnxruntime's CPU Add has no bfloat16 kernel


def random_graph(draw, dtype: str, max_layers: int = 4, max_features: int = 300) -> RandomGraph:
    """A random chain of linear layers; ``draw(label, lo, hi)`` picks an int in [lo, hi]."""
    b = _Builder(draw, dtype)
    rows: tuple[int, ...] = (draw("rows", 1, 5),)
    if draw("rank 3", 0, 1):
        rows = (draw("batch", 1, 3), *rows)
    k = draw("K", 1, max_features)
    input_shape = (*rows, k)
    x = b.node("Cast", ["x"], to=b.onnx_dtype)
    for _ in range(draw("layers", 1, max_layers)):
        n = draw("N", 1, max_features) if draw("small N", 0, 3) else draw("N", 1, 8)
        if draw("gemm", 0, 2) == 0:
            if len(rows) > 1:  # Gemm takes [M, K]: flatten the rows first
                shape = b.name("shape")
                b.inits.append(numpy_helper.from_array(np.array([-1, k], np.int64), shape))
                x = b.node("Reshape", [x, shape])
                rows = (int(np.prod(rows)),)
            x, layer = _gemm(b, x, rows, k, n)
        else:
            x, layer = _matmul(b, x, rows, k, n)
        b.layers.append(layer)
        if dtype != "bfloat16" and draw("relu", 0, 2) == 0:
            x = b.node("Relu", [x])
        rows = tuple(int(d) for d in np.broadcast_shapes((*rows, n), _addend_shape(layer))[:-1])
        k = n
    y = b.node("Cast", [x], to=TensorProto.FLOAT)
    graph = helper.make_graph(
        b.nodes,
        "random_linears",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [*rows, k])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return RandomGraph(model, input_shape, b.layers, dtype)


def _addend_shape(layer: Layer) -> tuple[int, ...]:
    return () if layer.addend is None else layer.addend.shape


def _matmul(b: _Builder, x: str, rows, k: int, n: int) -> tuple[str, Layer]:
    w, w_kn = b.weight(k, n, trans_b=False)
    y = b.node("MatMul", [x, w])
    layer = Layer(x, y, w_kn.T.copy())
    if b.draw("bias", 0, 1):
        shape = (n,) if b.foldable_only() else b.bias_shape(n, rows)
        bias = b.random(shape)
        pair = [y, b.const(bias, "b")]
        y = b.node("Add", pair if b.draw("bias side", 0, 1) else pair[::-1])
        layer.y, layer.addend = y, bias
    return y, layer


def _gemm(b: _Builder, x: str, rows, k: int, n: int) -> tuple[str, Layer]:
    trans_a, trans_b = b.draw("transA", 0, 1), b.draw("transB", 0, 1)
    alpha = ALPHAS[b.draw("alpha", 0, len(ALPHAS) - 1)]
    beta = ALPHAS[b.draw("beta", 0, len(ALPHAS) - 1)]
    w, w_kn = b.weight(k, n, trans_b=bool(trans_b))
    a = b.node("Transpose", [x], perm=[1, 0]) if trans_a else x
    inputs = [a, w]
    addend = None
    if b.draw("C", 0, 2):
        shapes = [(n,), (1, n), (1,), ()] + ([] if b.foldable_only() else [(rows[0], n)])
        c = b.random(shapes[b.draw("C shape", 0, len(shapes) - 1)])
        inputs.append(b.const(c, "C"))
        addend = beta * c
    y = b.node("Gemm", inputs, transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    return y, Layer(x, y, (alpha * w_kn).T.copy(), addend)
