"""ctypes bindings of libamx_kernels.so's CUDA C ABI (plugins/cuda/amx_cuda.h), on torch
CUDA tensors, for the tests and benchmarks/cuda_matmul.py.

>>> from amx_export.plugins.cuda import CudaKernels, unavailable_reason
>>> unavailable_reason()                # None when the kernels can run here
>>> k = CudaKernels()
>>> y = k.matmul(x, weights, "amxfp4", "amxfp4")   # x: a CUDA tensor; weights: on the GPU
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

from .. import formats
from . import library_path
from .native import NativeError

DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}
# amx_cuda_set_gemv_variant's names (plugins/cuda/gemv.cu): the same results, timed apart
GEMV_VARIANTS = ("baseline", "fused", "stream", "stream-fused")


def unavailable_reason(path=None) -> str | None:
    """Why the CUDA kernels cannot run in this process, or None when they can."""
    try:
        lib = ctypes.CDLL(str(path or library_path("kernels")))
    except Exception as e:  # not built, or not loadable
        return f"libamx_kernels is not loadable: {e}"
    if not hasattr(lib, "amx_cuda_device_count"):
        return "libamx_kernels was built without CUDA (no nvcc at build time)"
    if lib.amx_cuda_device_count() < 1:
        return "no CUDA device (the CUDA kernels are built, but there is no GPU or driver)"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch has no CUDA device"
    return None


class DeviceWeights(NamedTuple):
    """Packed weights on the GPU (uint8 torch tensors) and their format."""

    codes: object  # [N, nb*B/2]
    scales: object  # [N, nb, S]
    tensor_scale: float  # NVFP4's g (1.0 otherwise)
    format: str
    k: int

    @classmethod
    def from_quantized(cls, q: formats.Quantized, fmt: str, k: int, device="cuda"):
        import torch

        g = float(q.tensor_scale) if q.tensor_scale is not None else 1.0
        return cls(
            torch.as_tensor(q.codes).to(device).contiguous(),
            torch.as_tensor(q.scales).to(device).contiguous(),
            g,
            formats.get(fmt).name,
            k,
        )


class CudaKernels:
    """The CUDA kernels on torch tensors, on torch's current stream; raises NativeError with
    the kernel's message when a call fails."""

    def __init__(self, path=None):
        self.lib = ctypes.CDLL(str(path or library_path("kernels")))
        lib = self.lib
        if not hasattr(lib, "amx_cuda_device_count"):
            raise NativeError("libamx_kernels was built without CUDA")
        p, i64, s, i = ctypes.c_void_p, ctypes.c_int64, ctypes.c_char_p, ctypes.c_int
        lib.amx_cpu_error_string.restype = s
        lib.amx_cuda_last_error.restype = s
        lib.amx_cuda_quantize_workspace.restype = ctypes.c_size_t
        lib.amx_cuda_matmul_workspace.restype = ctypes.c_size_t
        lib.amx_cuda_matmul_workspace.argtypes = [s, s, i, i64, i64]
        lib.amx_cuda_quantize.argtypes = [s, i, p, i64, i64, p, p, p, p, p]
        lib.amx_cuda_fake_quant.argtypes = [s, i, p, i64, i64, p, p, p]
        lib.amx_cuda_set_gemv_variant.argtypes = [s]
        lib.amx_cuda_gemv_variant.restype = s
        lib.amx_cuda_matmul.argtypes = [
            s, s, i, p, i64, i64, p, p, ctypes.c_float, i64, p, i, p, p, p,
        ]  # fmt: skip

    def set_gemv_variant(self, name: str) -> None:
        """The GEMV kernel that later matmul calls of this process run (GEMV_VARIANTS)."""
        if self.lib.amx_cuda_set_gemv_variant(name.encode()) != 0:
            raise NativeError(f"unknown GEMV variant {name!r} (one of {', '.join(GEMV_VARIANTS)})")

    def gemv_variant(self) -> str:
        return self.lib.amx_cuda_gemv_variant().decode()

    def device_count(self) -> int:
        return self.lib.amx_cuda_device_count()

    def _check(self, rc: int) -> None:
        if rc != 0:
            message = self.lib.amx_cpu_error_string(rc).decode()
            if rc == 4:
                message += ": " + self.lib.amx_cuda_last_error().decode()
            raise NativeError(message)

    @staticmethod
    def _stream():
        import torch

        return torch.cuda.current_stream().cuda_stream

    @staticmethod
    def _dtype_code(t) -> int:
        name = str(t.dtype).removeprefix("torch.")
        if name not in DTYPE_CODES:
            raise NativeError(f"unsupported dtype {t.dtype} (float32, float16, bfloat16)")
        return DTYPE_CODES[name]

    @staticmethod
    def _workspace(nbytes: int):
        import torch

        return torch.empty(max(nbytes, 1), dtype=torch.uint8, device="cuda")

    def quantize(self, x, fmt: str) -> formats.Quantized:
        """Codes and scales (uint8 CUDA tensors) and NVFP4's g, like formats.quantize."""
        import torch

        spec = formats.get(fmt)
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        k = rows.shape[1]
        nb = -(-k // spec.block_size)
        codes = torch.empty((rows.shape[0], nb * spec.block_size // 2), dtype=torch.uint8,
                            device=x.device)  # fmt: skip
        scales = torch.empty((rows.shape[0], nb, spec.scales_per_block), dtype=torch.uint8,
                             device=x.device)  # fmt: skip
        g = torch.empty((), dtype=torch.float32, device=x.device)
        ws = self._workspace(self.lib.amx_cuda_quantize_workspace())
        self._check(self.lib.amx_cuda_quantize(
            spec.name.encode(), self._dtype_code(rows), rows.data_ptr(), *rows.shape,
            codes.data_ptr(), scales.data_ptr(), g.data_ptr(), ws.data_ptr(), self._stream(),
        ))  # fmt: skip
        lead = x.shape[:-1]
        return formats.Quantized(
            codes.reshape(*lead, -1),
            scales.reshape(*lead, nb, -1),
            g if spec.tensor_scale else None,
        )

    def fake_quant(self, x, fmt: str):
        """dequantize(quantize(x)) in x's dtype (float16 saturates)."""
        import torch

        rows = x.reshape(-1, x.shape[-1]).contiguous()
        y = torch.empty_like(rows)
        ws = self._workspace(self.lib.amx_cuda_quantize_workspace())
        self._check(self.lib.amx_cuda_fake_quant(
            formats.get(fmt).name.encode(), self._dtype_code(rows), rows.data_ptr(), *rows.shape,
            y.data_ptr(), ws.data_ptr(), self._stream(),
        ))  # fmt: skip
        return y.reshape(x.shape)

    def matmul_workspace(self, w: DeviceWeights, act_format: str | None, x):
        m = x.numel() // x.shape[-1]
        nbytes = self.lib.amx_cuda_matmul_workspace(
            w.format.encode(), (act_format or "none").encode(), self._dtype_code(x), m, w.k
        )
        return self._workspace(nbytes)

    def matmul(self, x, w: DeviceWeights, act_format: str | None, bias=None, workspace=None):
        """fake_quant(x) @ dequant(W)ᵀ (+ bias), in x's dtype."""
        import torch

        if x.shape[-1] != w.k:
            raise NativeError(f"x has K={x.shape[-1]}, the weights K={w.k}")
        rows = x.reshape(-1, w.k).contiguous()
        n = w.codes.shape[0]
        y = torch.empty((rows.shape[0], n), dtype=x.dtype, device=x.device)
        ws = workspace if workspace is not None else self.matmul_workspace(w, act_format, rows)
        bias_ptr, bias_code = (
            (None, 0) if bias is None else (bias.data_ptr(), self._dtype_code(bias))
        )
        self._check(self.lib.amx_cuda_matmul(
            w.format.encode(), (act_format or "none").encode(), self._dtype_code(rows),
            rows.data_ptr(), rows.shape[0], w.k, w.codes.data_ptr(), w.scales.data_ptr(),
            w.tensor_scale, n, bias_ptr, bias_code, y.data_ptr(), ws.data_ptr(), self._stream(),
        ))  # fmt: skip
        return y.reshape(*x.shape[:-1], n)
