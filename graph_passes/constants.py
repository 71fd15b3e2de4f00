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


def _reshape(data: np.ndarray, shape: np.ndarray, allowzero: int) -> np.ndarray:
    target = [int(d) for d in shape]
    if not allowzero:  # ONNX: a 0 copies the input's dimension
        target = [data.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return data.reshape(target)


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
            shape_source, shape_chain = constant_source(node.inputs[1])
            shape = constant_array(shape_source, shape_chain)
            allowzero = node.attributes.get("allowzero")
            data = _reshape(data, shape, allowzero.value if allowzero else 0)
    return data
