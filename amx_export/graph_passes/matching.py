"""Small helpers the pattern-matching passes share: a value's producer of a given op type,
its dimensions, and constant integer inputs."""

from __future__ import annotations

import onnx_ir as ir

from .constants import constant_array, constant_source

DEFAULT_DOMAINS = ("", "ai.onnx")


def producer_of(value: ir.Value | None, *op_types: str) -> ir.Node | None:
    """The default-domain node of one of ``op_types`` that makes ``value``, else None."""
    node = value.producer() if value is not None else None
    if node is None or node.domain not in DEFAULT_DOMAINS or node.op_type not in op_types:
        return None
    return node


def dims_of(value: ir.Value, rank: int) -> list | None:
    """The value's dimensions (ints, symbol names, or None) when its rank is ``rank``."""
    shape = value.shape
    if shape is None or len(shape) != rank:
        return None
    return [d if isinstance(d, int) else d.value for d in shape]


def same_dim(a, b) -> bool:
    """Two dimensions known to be equal: the same int or the same symbol."""
    return a is not None and a == b


def constant_ints(value: ir.Value | None) -> list[int] | None:
    """A constant input's integers (flattened), or None when it is computed."""
    found = constant_source(value)
    return None if found is None else [int(a) for a in constant_array(*found).ravel()]


def unsqueeze_axes(node: ir.Node) -> list[int] | None:
    if len(node.inputs) > 1:  # opset 13 and later: the axes are an input
        return constant_ints(node.inputs[1])
    attribute = node.attributes.get("axes")
    return None if attribute is None else list(attribute.value)


INT_PASS_THROUGH = ("Identity", "Cast", "Unsqueeze", "Squeeze", "Reshape")
STATIC_DEPTH = 8


def static_ints(value: ir.Value | None, depth: int = STATIC_DEPTH) -> list[int] | None:
    """The integers of a shape computation that the graph's static dimensions fix (flattened),
    or None: a constant, a Shape whose dimensions are ints, a Gather of static dimensions
    from a Shape, integer Div / Mul / Add / Sub, Concat, and the Cast / Unsqueeze / Squeeze /
    Reshape that only move such values around (TorchScript's ``x.shape[-1] // 2``)."""
    found = constant_ints(value)
    if found is not None or value is None or depth == 0:
        return found
    node = producer_of(value, "Shape", "Gather", "Div", "Mul", "Add", "Sub", "Concat",
                       *INT_PASS_THROUGH)  # fmt: skip
    if node is None:
        return None
    if node.op_type == "Shape":
        shape = node.inputs[0].shape
        if shape is None:
            return None
        start, end = node.attributes.get("start"), node.attributes.get("end")
        dims = list(shape)[start.value if start else 0 : end.value if end else len(shape)]
        return dims if all(isinstance(d, int) for d in dims) else None
    if node.op_type == "Gather":  # one static dimension of a shape not static as a whole
        shape_node = producer_of(node.inputs[0], "Shape")
        indices = constant_ints(node.inputs[1])
        axis = node.attributes.get("axis")
        if shape_node is None or indices is None or (axis is not None and axis.value != 0):
            return None
        if shape_node.attributes.get("start") or shape_node.attributes.get("end"):
            return None
        shape = shape_node.inputs[0].shape
        if shape is None or any(not -len(shape) <= i < len(shape) for i in indices):
            return None
        dims = [shape[i] for i in indices]
        return dims if all(isinstance(d, int) for d in dims) else None
    if node.op_type == "Cast":
        to = ir.DataType(node.attributes["to"].value)
        if not to.is_integer():
            return None
    inputs = [static_ints(v, depth - 1) if v is not None else None for v in node.inputs]
    if node.op_type in INT_PASS_THROUGH:
        return inputs[0]
    if node.op_type == "Concat":
        return None if None in inputs else [i for part in inputs for i in part]
    if None in inputs[:2]:
        return None
    a, b = inputs[:2]
    if len(b) == 1:
        b = b * len(a)
    elif len(a) == 1:
        a = a * len(b)
    if len(a) != len(b):
        return None
    if node.op_type == "Div":  # ONNX integer Div truncates; only exact or non-negative cases
        if any(y == 0 or x < 0 or y < 0 for x, y in zip(a, b, strict=True)):
            return None
        return [x // y for x, y in zip(a, b, strict=True)]
    ops = {"Mul": lambda x, y: x * y, "Add": lambda x, y: x + y, "Sub": lambda x, y: x - y}
    return [ops[node.op_type](x, y) for x, y in zip(a, b, strict=True)]
