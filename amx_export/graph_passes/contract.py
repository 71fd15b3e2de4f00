"""The amx node contract (domain "amx", version 1): the one table that the passes emit, the
emulation lowers, and the native op libraries (onnxruntime, TensorRT) are tested against.

amx.MatMul(X, Wcodes, Wscales[, bias]) -> Y
    X        float32 / float16 / bfloat16 [..., K]
    Wcodes   uint8 [N, ceil(K/B)*B/2]   weight codes, [N, K]-major (FORMAT.md packed layout)
    Wscales  uint8 [N, ceil(K/B), S]    weight scale codes (S = 2: positive, negative)
    bias     float [N] (optional)
    Y        = fake_quant(X, act_format) @ dequant(W, weight_format)^T (+ bias), float32
               accumulation, in X's dtype; act_format "none" leaves X as it is (weight-only).
               fake_quant(X) is taken on X upcast to float32 and kept in float32 (not rounded
               back to X's dtype: NVFP4's tensor scale makes values float16 cannot hold).

amx.Quantize(X) -> Y
    Y = fake_quant(X, format) along the last axis, X's dtype and shape.

The block size is implied by the format name (FORMAT.md), so it is not an attribute of its own.

The TensorRT form (model metadata "amx_export.target" = "tensorrt"; graph_passes.tensorrt_form)
    TensorRT takes no uint8 plugin inputs or constants (its ONNX parser widens uint8
    initializers to int32 element by element, 4x the memory), so the same bytes travel as int32
    words, little-endian, 4 bytes each:
    Wcodes   int32 [N, nb*B/8]          the uint8 [N, nb*B/2] codes viewed as int32
    Wscales  int32 [ceil(N*nb*S/4)]     the uint8 [N, nb, S] scales flattened, zero-padded
                                        to a multiple of 4 bytes, viewed as int32
    (nb = ceil(K/B)). Both amx nodes also carry plugin_namespace="amx" and plugin_version="1":
    TensorRT >= 10.15 then imports them as our plugins before its built-in MatMul importer.
    libamx_ort.so accepts either form.
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

# ---- targets: the onnxruntime form (above) and the TensorRT form ------------------------------

TARGET_KEY = "amx_export.target"  # model metadata_props key; absent means onnxruntime
ONNXRUNTIME = "onnxruntime"
TENSORRT = "tensorrt"
TARGETS = (ONNXRUNTIME, TENSORRT)

PLUGIN_NAMESPACE_ATTRIBUTE = "plugin_namespace"
PLUGIN_NAMESPACE = "amx"
PLUGIN_VERSION_ATTRIBUTE = "plugin_version"
PLUGIN_VERSION = "1"
PLUGIN_ATTRIBUTES = {
    PLUGIN_NAMESPACE_ATTRIBUTE: PLUGIN_NAMESPACE,
    PLUGIN_VERSION_ATTRIBUTE: PLUGIN_VERSION,
}  # string attributes of every amx node in the TensorRT form

WEIGHT_DTYPE = {ONNXRUNTIME: "uint8", TENSORRT: "int32"}  # numpy dtype of Wcodes and Wscales
WORD_BYTES = 4  # bytes per int32 word (little-endian)


def _blocks(k: int, block: int) -> int:
    return -(-k // block)


def wcodes_shape(n: int, k: int, block: int, target: str = ONNXRUNTIME) -> tuple[int, ...]:
    """[N, nb*B/2] bytes, or [N, nb*B/8] int32 words (nb*B/2 is a multiple of 4: B is 16 or 32)."""
    row_bytes = _blocks(k, block) * block // 2
    return (n, row_bytes) if target == ONNXRUNTIME else (n, row_bytes // WORD_BYTES)


def wscales_shape(
    n: int, k: int, block: int, scales_per_block: int, target: str = ONNXRUNTIME
) -> tuple[int, ...]:
    """[N, nb, S] bytes, or [ceil(N*nb*S/4)] int32 words (the last one zero-padded)."""
    nb = _blocks(k, block)
    if target == ONNXRUNTIME:
        return (n, nb, scales_per_block)
    return (-(-n * nb * scales_per_block // WORD_BYTES),)
