"""The amx node contract (domain "amx", version 1): the one table that the passes emit, the
emulation lowers, and the native op libraries (onnxruntime, TensorRT) are tested against.

amx.MatMul(X, Wcodes, Wscales[, bias]) -> Y
    X        float32 / float16 / bfloat16 [..., K]
    Wcodes   uint8 [N, ceil(K/B)*B/2]   weight codes, [N, K]-major (FORMAT.md packed layout)
    Wscales  uint8 [N, ceil(K/B), S]    weight scale codes (S = 2: positive, negative)
    bias     float [N] (optional)
    Y        = fake_quant(X, act_format) @ dequant(W, weight_format)^T (+ bias), float32
               accumulation, in X's dtype; act_format "none" leaves X as it is (weight-only).

amx.Quantize(X) -> Y
    Y = fake_quant(X, format) along the last axis, X's dtype and shape.

The block size is implied by the format name (FORMAT.md), so it is not an attribute of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

DOMAIN = "amx"
VERSION = 1
MATMUL = "MatMul"
QUANTIZE = "Quantize"
NO_ACT = "none"


@dataclass(frozen=True)
class Attribute:
    name: str
    type: type  # str, int or float
    doc: str
    required: bool = True


MATMUL_ATTRIBUTES = (
    Attribute("weight_format", str, "format of Wcodes/Wscales (amx_export.formats name)"),
    Attribute("act_format", str, 'format X is fake-quantized to, or "none" (weight-only)'),
    Attribute("in_features", int, "K, the reduction length (Wcodes holds it padded to B)"),
    Attribute(
        "weight_tensor_scale", float, "NVFP4's float32 weight tensor scale g", required=False
    ),
)
QUANTIZE_ATTRIBUTES = (Attribute("format", str, "amx_export.formats name"),)

ATTRIBUTES = {MATMUL: MATMUL_ATTRIBUTES, QUANTIZE: QUANTIZE_ATTRIBUTES}
