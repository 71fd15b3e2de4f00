"""Resolve a value to a constant array, looking through the ops exporters put on weights.

Exporters often store a linear weight as [N, K] and transpose it in the graph, or keep it in
float16 and Cast it; some reshape it. ``constant_source`` follows Identity / Transpose / Cast
/ Reshape / Constant chains back to one initializer and ``constant_array`` replays the chain
on its data, so the graph needs no constant folding before the passes run.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

TRANSPARENT_OPS = ("Identity", "Transpose", "Cast", "Reshape")


def constant_source(value: ir.Value | None) -> tuple[ir.Value, list[ir.Node]] | None:
    """The initializer (or Constant output) behind ``value`` and the chain of nodes from it.

    Returns None when the value is computed from anything that is not constant.
    """
    chain: list[ir.Node] = []
    while value is not None:
        if value.const_value is not None and not value.is_graph_input():
            return value, chain[::-1]
        node = value.producer()
        if node is None or node.domain not in ("", "ai.onnx"):
            return None
        if node.op_type == "Constant" and "value" in node.attributes:
            return value, chain[::-1]
        if node.op_type not in TRANSPARENT_OPS:
            return None
        if node.op_type == "Reshape" and constant_source(node.inputs[1]) is None:
            return None
        chain.append(node)
        value = node.inputs[0]
    return None


def _tensor(value: ir.Value) -> np.ndarray:
    if value.const_value is not None:
        return value.const_value.numpy()
    return value.producer().attributes["value"].value.numpy()


def _tensor_meta(value: ir.Value) -> tuple[tuple[int, ...], np.dtype]:
    tensor = value.const_value
    if tensor is None:
        tensor = value.producer().attributes["value"].value
    return tuple(tensor.shape.numpy()), tensor.dtype.numpy()


def _reshape_target(shape: tuple[int, ...], target: np.ndarray, allowzero: int) -> list[int]:
    """ONNX Reshape's output shape: a 0 copies the input's dimension (unless allowzero), one
    -1 takes what is left."""
    dims = [int(d) for d in target]
    if not allowzero:
        dims = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(dims)]
    if dims.count(-1) == 1:
        known = int(np.prod([d for d in dims if d != -1]))
        size = int(np.prod(shape))
        dims[dims.index(-1)] = size // known if known else 0
    if int(np.prod(dims)) != int(np.prod(shape)) or any(d < 0 for d in dims):
        raise ValueError(f"cannot reshape {list(shape)} to {[int(d) for d in target]}")
    return dims


def constant_meta(source: ir.Value, chain: list[ir.Node]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``constant_array(source, chain)`` without reading the data.

    Raises ValueError where the chain does not apply to the constant (a bad Reshape).
    """
    shape, dtype = _tensor_meta(source)
    for node in chain:
        if node.op_type == "Transpose":
            perm = node.attributes.get("perm")
            order = list(perm.value) if perm is not None else list(range(len(shape)))[::-1]
            if sorted(order) != list(range(len(shape))):
                raise ValueError(f"Transpose perm {order} does not fit rank {len(shape)}")
            shape = tuple(shape[i] for i in order)
        elif node.op_type == "Cast":
            dtype = ir.DataType(node.attributes["to"].value).numpy()
        elif node.op_type == "Reshape":
            target = constant_array(*constant_source(node.inputs[1]))
            allowzero = node.attributes.get("allowzero")
            shape = tuple(_reshape_target(shape, target, allowzero.value if allowzero else 0))
    return shape, np.dtype(dtype)


def constant_array(source: ir.Value, chain: list[ir.Node]) -> np.ndarray:
    """The source's data with the chain's Transpose / Cast / Reshape applied."""
    data = _tensor(source)
    for node in chain:
        if node.op_type == "Transpose":
            perm = node.attributes.get("perm")
            data = np.transpose(data, None if perm is None else list(perm.value))
        elif node.op_type == "Cast":
            to = ir.DataType(node.attributes["to"].value)
            data = data.astype(to.numpy())
        elif node.op_type == "Reshape":
            target = constant_array(*constant_source(node.inputs[1]))
            allowzero = node.attributes.get("allowzero")
            dims = _reshape_target(data.shape, target, allowzero.value if allowzero else 0)
            data = data.reshape(dims)
    return data


def scaled_input(node: ir.Node) -> int | None:
    """The index of the non-constant input when ``node`` is a default-domain Mul or Div by a
    scalar constant (SDPA's sqrt(scale) on Q and K), else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("Mul", "Div"):
        return None
    a, b = node.inputs
    for index, other in [(0, b)] if node.op_type == "Div" else [(0, b), (1, a)]:
        found = constant_source(other)
        if found is not None and constant_array(*found).size == 1:
            return None if constant_source(node.inputs[index]) else index
    return None
