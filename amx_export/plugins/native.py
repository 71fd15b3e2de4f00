"""ctypes bindings of libamx_kernels.so's C ABI (plugins/cpu/amx_cpu.h), for tests and tools.

>>> from amx_export.plugins.native import Kernels
>>> k = Kernels()                       # loads the built library
>>> q = k.quantize(x, "amxfp4")         # formats.Quantized, like amx_export.formats
"""

from __future__ import annotations

import ctypes

import numpy as np

from .. import formats
from . import library_path

_F32 = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_U8 = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")
_I64 = ctypes.c_int64


class NativeError(RuntimeError):
    pass


class Kernels:
    """The CPU kernels; every call checks the status code and raises NativeError."""

    def __init__(self, path=None):
        self.lib = ctypes.CDLL(str(path or library_path("kernels")))
        lib = self.lib
        lib.amx_cpu_error_string.restype = ctypes.c_char_p
        lib.amx_cpu_isa.restype = ctypes.c_char_p
        lib.amx_cpu_set_isa.argtypes = [ctypes.c_char_p]
        s = ctypes.c_char_p
        lib.amx_cpu_quantize.argtypes = [
            s,
            _F32,
            _I64,
            _I64,
            _U8,
            _U8,
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.amx_cpu_dequantize.argtypes = [s, _U8, _U8, ctypes.c_float, _I64, _I64, _F32]
        lib.amx_cpu_fake_quant.argtypes = [s, _F32, _I64, _I64, _F32]
        lib.amx_cpu_pack_weights.restype = ctypes.c_void_p
        lib.amx_cpu_pack_weights.argtypes = [s, _U8, _U8, ctypes.c_float, _I64, _I64]
        lib.amx_cpu_free_packed.argtypes = [ctypes.c_void_p]
        lib.amx_cpu_matmul_packed.argtypes = [ctypes.c_void_p, s, _F32, _I64, ctypes.c_void_p, _F32]
        lib.amx_cpu_matmul.argtypes = [
            s,
            s,
            _F32,
            _I64,
            _I64,
            _U8,
            _U8,
            ctypes.c_float,
            _I64,
            ctypes.c_void_p,
            _F32,
        ]

    def isa(self) -> str:
        return self.lib.amx_cpu_isa().decode()

    def set_isa(self, name: str) -> None:
        self._check(self.lib.amx_cpu_set_isa(name.encode()))

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise NativeError(self.lib.amx_cpu_error_string(rc).decode())

    @staticmethod
    def _rows(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])

    def quantize(self, x: np.ndarray, fmt: str) -> formats.Quantized:
        spec = formats.get(fmt)
        rows = self._rows(x)
        nb = -(-x.shape[-1] // spec.block_size)
        codes = np.zeros((rows.shape[0], nb * spec.block_size // 2), np.uint8)
        scales = np.zeros((rows.shape[0], nb, spec.scales_per_block), np.uint8)
        g = ctypes.c_float()
        self._check(self.lib.amx_cpu_quantize(
            spec.name.encode(), rows, *rows.shape, codes, scales, ctypes.byref(g)
        ))  # fmt: skip
        lead = x.shape[:-1]
        tensor_scale = np.float32(g.value) if spec.tensor_scale else None
        return formats.Quantized(
            codes.reshape(*lead, -1), scales.reshape(*lead, nb, -1), tensor_scale
        )

    def dequantize(self, q: formats.Quantized, fmt: str, k: int) -> np.ndarray:
        spec = formats.get(fmt)
        codes = np.ascontiguousarray(q.codes).reshape(-1, q.codes.shape[-1])
        y = np.empty((codes.shape[0], k), np.float32)
        g = float(q.tensor_scale) if q.tensor_scale is not None else 1.0
        scales = np.ascontiguousarray(q.scales)
        self._check(self.lib.amx_cpu_dequantize(spec.name.encode(), codes, scales, g, *y.shape, y))
        return y.reshape(*q.codes.shape[:-1], k)

    def fake_quant(self, x: np.ndarray, fmt: str) -> np.ndarray:
        rows = self._rows(x)
        y = np.empty_like(rows)
        self._check(
            self.lib.amx_cpu_fake_quant(formats.get(fmt).name.encode(), rows, *rows.shape, y)
        )
        return y.reshape(x.shape)

    def matmul(self, x, q: formats.Quantized, weight_format: str, act_format: str | None,
               bias=None) -> np.ndarray:  # fmt: skip
        """fake_quant(x) @ dequant(W)ᵀ (+ bias) for packed weights q ([N, ...] codes)."""
        rows = self._rows(x)
        n = q.codes.shape[0]
        y = np.empty((rows.shape[0], n), np.float32)
        bias_arr = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
        g = float(q.tensor_scale) if q.tensor_scale is not None else 1.0
        self._check(self.lib.amx_cpu_matmul(
            weight_format.encode(), (act_format or "none").encode(), rows, *rows.shape,
            np.ascontiguousarray(q.codes), np.ascontiguousarray(q.scales), g, n,
            None if bias_arr is None else bias_arr.ctypes.data, y,
        ))  # fmt: skip
        return y.reshape(*np.shape(x)[:-1], n)

    def matmul_packed(self, x, q: formats.Quantized, weight_format: str, act_format: str | None,
                      bias=None, repeat: int = 1) -> np.ndarray:  # fmt: skip
        """As matmul, through amx_cpu_pack_weights / amx_cpu_matmul_packed (``repeat`` runs
        on the same handle, for timing)."""
        rows = self._rows(x)
        codes, scales = np.ascontiguousarray(q.codes), np.ascontiguousarray(q.scales)
        n, k = codes.shape[0], np.shape(x)[-1]
        g = float(q.tensor_scale) if q.tensor_scale is not None else 1.0
        handle = self.lib.amx_cpu_pack_weights(weight_format.encode(), codes, scales, g, n, k)
        if not handle:
            raise NativeError("amx_cpu_pack_weights refused its arguments")
        try:
            y = np.empty((rows.shape[0], n), np.float32)
            bias_arr = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
            for _ in range(repeat):
                self._check(self.lib.amx_cpu_matmul_packed(
                    handle, (act_format or "none").encode(), rows, rows.shape[0],
                    None if bias_arr is None else bias_arr.ctypes.data, y,
                ))  # fmt: skip
        finally:
            self.lib.amx_cpu_free_packed(handle)
        return y.reshape(*np.shape(x)[:-1], n)
