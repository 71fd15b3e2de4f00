"""The few array operations the block algorithm needs, for numpy and for torch.

The algorithm in ``block`` is written once against this interface, so numpy and torch
(CPU or CUDA) run the same steps; tests still compare their results bit for bit, since the
libraries' own semantics (NaN propagation, casts) could differ. torch is imported lazily:
the package works without it.
"""

from __future__ import annotations

import numpy as np

FP16_MAX = 65504.0
SMALL_TABLE = 8  # bucket by comparisons up to this many boundaries (E2M1 has 7)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


class NumpyBackend:
    name = "numpy"

    @staticmethod
    def to_float32(x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float16) and x.dtype.name != "bfloat16":
            raise TypeError(f"expected float32, float16 or bfloat16 data, got {x.dtype}")
        return x.astype(np.float32)

    @staticmethod
    def const(table: np.ndarray, like) -> np.ndarray:
        return table

    @staticmethod
    def where(cond, a, b):
        return np.where(cond, a, b)

    @staticmethod
    def isfinite(x):
        return np.isfinite(x)

    @staticmethod
    def clamp(x, lo=None, hi=None):
        return np.clip(x, lo, hi)

    @staticmethod
    def amax(x):
        return np.max(x, axis=-1)

    @staticmethod
    def amin(x):
        return np.min(x, axis=-1)

    @staticmethod
    def max_all(x) -> np.float32:
        return np.float32(np.max(x, initial=0.0))

    @staticmethod
    def bucket(x, boundaries: np.ndarray):
        """How many boundaries are <= x (searchsorted 'right'), as uint8."""
        if len(boundaries) > SMALL_TABLE:
            return np.searchsorted(boundaries, x, side="right").astype(np.uint8)
        count = np.zeros(x.shape, np.uint8)
        for edge in boundaries:  # a few passes of compare-and-add beat a binary search
            count += x >= edge
        return count

    @staticmethod
    def pad_last(x, n: int):
        if n == 0:
            return x
        return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n)])

    @staticmethod
    def stack_last(parts):
        return np.stack(parts, axis=-1)

    @staticmethod
    def u8(x):
        return x.astype(np.uint8)

    @staticmethod
    def lookup(table: np.ndarray, codes):
        return table[codes]

    @staticmethod
    def cast_like(y: np.ndarray, like) -> np.ndarray:
        dtype = np.asarray(like).dtype
        if dtype == np.float16:
            y = np.clip(y, -FP16_MAX, FP16_MAX)
        return y.astype(dtype)


class TorchBackend:
    name = "torch"

    @staticmethod
    def to_float32(x):
        import torch

        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"expected float32, float16 or bfloat16 data, got {x.dtype}")
        return x.to(torch.float32)

    @staticmethod
    def const(table: np.ndarray, like):
        import torch

        return torch.as_tensor(table, device=like.device)

    @staticmethod
    def where(cond, a, b):
        import torch

        return torch.where(cond, a, b)

    @staticmethod
    def isfinite(x):
        return x.isfinite()

    @staticmethod
    def clamp(x, lo=None, hi=None):
        return x.clamp(lo, hi)

    @staticmethod
    def amax(x):
        return x.amax(dim=-1)

    @staticmethod
    def amin(x):
        return x.amin(dim=-1)

    @staticmethod
    def max_all(x):
        import torch

        if x.numel() == 0:
            return torch.zeros((), dtype=torch.float32, device=x.device)
        return x.max().clamp_min(0.0)

    @staticmethod
    def bucket(x, boundaries: np.ndarray):
        import torch

        if len(boundaries) > SMALL_TABLE:
            edges = torch.as_tensor(boundaries, device=x.device)
            found = torch.searchsorted(edges, x.contiguous(), right=True, out_int32=True)
            return found.to(torch.uint8)
        count = torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
        for edge in boundaries.tolist():
            count += x >= edge
        return count

    @staticmethod
    def pad_last(x, n: int):
        import torch.nn.functional as F

        return F.pad(x, (0, n)) if n else x

    @staticmethod
    def stack_last(parts):
        import torch

        return torch.stack(parts, dim=-1)

    @staticmethod
    def u8(x):
        import torch

        return x.to(torch.uint8)

    @staticmethod
    def lookup(table: np.ndarray, codes):
        import torch

        return torch.as_tensor(table, device=codes.device)[codes.long()]

    @staticmethod
    def cast_like(y, like):
        import torch

        if like.dtype == torch.float16:
            y = y.clamp(-FP16_MAX, FP16_MAX)
        return y.to(like.dtype)


def backend_for(x):
    return TorchBackend if _is_torch(x) else NumpyBackend
