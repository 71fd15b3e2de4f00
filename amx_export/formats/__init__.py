"""AMXFP4, MXFP4 and NVFP4 numerics: the project's single Python source of truth.

FORMAT.md (the numeric contract) is implemented here exactly; every other implementation
(C++, CUDA, the ONNX emulation graph) is tested against these functions bit for bit.

    >>> from amx_export import formats
    >>> q = formats.quantize(x, "amxfp4")        # codes, scales (, tensor_scale)
    >>> y = formats.dequantize(q, "amxfp4", k=x.shape[-1])
    >>> y = formats.fake_quant(x, "mxfp4")
"""

from .block import Quantized, dequantize, fake_quant, quantize
from .minifloat import E2M1, E4M3, E5M2, E8M0, SCALE_FORMATS, MiniFloat, PowerOfTwo
from .specs import DEFAULT, FORMATS, FormatSpec, get, names

__all__ = [
    "DEFAULT",
    "E2M1",
    "E4M3",
    "E5M2",
    "E8M0",
    "FORMATS",
    "FormatSpec",
    "MiniFloat",
    "PowerOfTwo",
    "Quantized",
    "SCALE_FORMATS",
    "dequantize",
    "fake_quant",
    "get",
    "names",
    "quantize",
]
