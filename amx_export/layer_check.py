"""Layer by layer: each amx.MatMul's output against fake_quant(X) @ dequant(W)ᵀ (+ bias),
computed in float64 from the X the runtime itself fed the layer.

Unlike a comparison of the model's outputs, this one is exact (float32 summation order
aside) whatever happened upstream, so it catches a wrong format, scale rule, packing or axis
in any layer, on any runtime that can expose intermediate values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from . import formats

TOLERANCE = 1e-4  # of the layer's largest output: float32 sums over K <= ~10k terms


@dataclass
class Layer:
    name: str
    x: str  # names of the node's activation input and output values
    y: str
    codes: np.ndarray
    scales: np.ndarray
    bias: np.ndarray | None
    attrs: dict

    def expected(self, x: np.ndarray) -> np.ndarray:
        fmt, act = self.attrs["weight_format"], self.attrs["act_format"]
        g = self.attrs.get("weight_tensor_scale")
        q = formats.Quantized(self.codes, self.scales, None if g is None else np.float32(g))
        weight = formats.dequantize(q, fmt, k=self.attrs["in_features"]).astype(np.float64)
        xq = x if act == "none" else formats.fake_quant(x, act)
        y = xq.astype(np.float64) @ weight.T
        return y if self.bias is None else y + self.bias

    def error(self, x: np.ndarray, y: np.ndarray) -> float:
        """max |y - expected| / max |expected| (0 for an all-zero output that is zero)."""
        expected = self.expected(x.astype(np.float32))
        scale = np.abs(expected).max()
        diff = np.abs(y.astype(np.float64) - expected).max()
        return float(diff / scale) if scale > 0 else float(diff)


def expose_layers(model: ir.Model, count: int | None = None) -> list[Layer]:
    """Make the inputs and outputs of the first ``count`` (all) amx.MatMul nodes whose
    weights are initializers graph outputs; returns what is needed to check them."""
    layers = []
    for node in model.graph:
        if node.domain != "amx" or node.op_type != "MatMul":
            continue
        if count is not None and len(layers) >= count:
            break
        consts = [v.const_value if v is not None else None for v in node.inputs[1:]]
        if any(c is None for c in consts[:2]):
            continue
        bias = consts[2].numpy().astype(np.float64) if len(consts) > 2 and consts[2] else None
        for value in (node.inputs[0], node.outputs[0]):
            if value not in model.graph.outputs:
                model.graph.outputs.append(value)
        attrs = {k: a.value for k, a in node.attributes.items()}
        layers.append(Layer(node.name, node.inputs[0].name, node.outputs[0].name,
                            consts[0].numpy(), consts[1].numpy(), bias, attrs))  # fmt: skip
    return layers
