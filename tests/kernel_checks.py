"""Inputs that stress FORMAT.md's rules and the matmul reference, shared by the CPU and
CUDA kernel tests."""

import contextlib

import numpy as np
import pytest

from amx_export import formats
from amx_export.formats.minifloat import E2M1


def edge_cases(rng, k: int) -> np.ndarray:
    """Rows that each stress one rule of FORMAT.md."""
    rows = []
    normal = rng.standard_normal(k).astype(np.float32)
    rows.append(normal)
    rows.append(np.zeros(k, np.float32))
    rows.append(np.abs(normal))  # one-signed blocks: the other scale has no element
    rows.append(-np.abs(normal))
    ties = rng.choice(E2M1.midpoints, k).astype(np.float32) * rng.choice([-1, 1], k)
    ties[::7] = 6.0  # sets the scale to exactly 1 in amxfp4, so the midpoints are ties
    rows.append(ties.astype(np.float32))
    rows.append(normal * np.float32(1e-40))  # subnormal float32
    rows.append(normal * np.float32(1e36))  # near float32's max
    rows.append(np.float32(2.0) ** rng.integers(-140, 127, k).astype(np.float32))
    spiky = normal.copy()
    spiky[::13] *= 1000  # outliers
    rows.append(spiky)
    bad = normal.copy()
    bad[min(3, k - 1)] = np.nan
    rows.append(bad)
    inf = normal.copy()
    inf[k // 2] = -np.inf
    rows.append(inf)
    return np.stack(rows).astype(np.float32)


def expected_matmul(x, q, fmt, act, k, bias):
    """fake_quant(x) @ dequant(W)ᵀ (+ bias) in float64, and Σ|x||w| for error bounds."""
    w = formats.dequantize(q, fmt, k=k).astype(np.float64)
    xq = (formats.fake_quant(x, act) if act else x).astype(np.float64)
    y = xq @ w.T
    bound = np.abs(xq) @ np.abs(w).T  # float32 accumulation error scales with this
    return (y if bias is None else y + bias), bound


def extreme_weights(rng, n: int, k: int) -> np.ndarray:
    """Weight rows whose scales reach the ends of their formats' ranges (E8M0 down to 2^-127,
    a subnormal bfloat16, where the GPU kernels decode into bfloat16), one-signed rows, and
    rows that mix tiny and huge blocks. With activations near 2^10 every product and sum
    stays a normal float32."""
    exponents = np.array([-135, -126, -120, -60, 0, 40, 90], np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    w *= np.float32(2.0) ** exponents[np.arange(n) % len(exponents)][:, None]
    w[1::5] = np.abs(w[1::5])
    w[2::5] = -np.abs(w[2::5])
    mixed = np.float32(2.0) ** rng.choice(exponents, (n, -(-k // 32)))
    w[3::4] *= np.repeat(mixed, 32, axis=1)[3::4, :k] / np.float32(2.0) ** 40
    return w


def unpack_codes(codes: np.ndarray) -> np.ndarray:
    """Element codes from packed bytes (element 2j low nibble, 2j+1 high nibble)."""
    codes = np.asarray(codes)
    return np.stack([codes & 0x0F, codes >> 4], axis=-1).reshape(*codes.shape[:-1], -1)


@contextlib.contextmanager
def selected_isa(kernels, isa: str):
    """Runs the block with the kernels capped to `isa` (skips where the CPU lacks it)."""
    from amx_export.plugins.native import NativeError

    default = kernels.isa()
    try:
        kernels.set_isa(isa)
    except NativeError:
        pytest.skip(f"this CPU has no {isa}")
    try:
        yield
    finally:
        kernels.set_isa(default)
