"""Block quantization of FORMAT.md: quantize -> (codes, scales), dequantize, fake_quant.

One vectorised algorithm for every format of ``specs`` and for both numpy and torch
(``backend``). Shapes: x [..., K] -> codes uint8 [..., nb*B/2] (element 2j in the low
nibble of byte j), scales uint8 [..., nb, S]; nb = ceil(K / B), the tail block padded with
zeros (neutral for every scale rule).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .backend import backend_for
from .minifloat import E2M1, MiniFloat
from .specs import DEFAULT, FormatSpec, get

NVFP4_TENSOR_DIVISOR = 448.0 * 6.0  # E4M3FN max times E2M1 max


class Quantized(NamedTuple):
    codes: Any  # uint8 [..., nb*B/2], two E2M1 codes per byte
    scales: Any  # uint8 [..., nb, S], scale-format codes (S=2: positive, negative)
    tensor_scale: Any = None  # float32 scalar for nvfp4, else None


def _tensor_scale(be, mags):
    """NVFP4's g = amax / (448*6), amax over the blocks that hold no NaN/Inf; 0 gives 1."""
    g = be.max_all(mags) / NVFP4_TENSOR_DIVISOR
    return be.where(g == 0, 1.0, g)


def _scale_codes(be, mags, spec: FormatSpec, g):
    """Scale codes from the blocks' magnitudes (pmax/nmax, or amax) by the spec's rule."""
    s = mags / 6 if spec.rule == "minifloat" else mags
    if g is not None:
        s = s / g
    codes = be.bucket(s, spec.scale_edges)
    return be.where(s == 0, spec.zero_scale_code, codes)


def quantize(x, fmt: str | FormatSpec = DEFAULT) -> Quantized:
    """Quantize x (numpy or torch; float32/float16/bfloat16) in blocks along its last axis."""
    spec = get(fmt)
    be = backend_for(x)
    x = be.to_float32(x)
    if x.ndim == 0:
        raise ValueError("quantize needs at least one axis (blocks run along the last)")
    k, bs = x.shape[-1], spec.block_size
    nb = -(-k // bs)
    blocks = be.pad_last(x, nb * bs - k).reshape(*x.shape[:-1], nb, bs)

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        hi, lo = be.amax(blocks), be.amin(blocks)
        bad = ~(be.isfinite(hi) & be.isfinite(lo))  # NaN or ±Inf anywhere in the block
        hi, lo = be.where(bad, 0.0, hi), be.where(bad, 0.0, lo)
        if spec.signed_scales:
            mags = be.stack_last([be.clamp(hi, 0), be.clamp(-lo, 0)])
        else:
            mags = be.stack_last([be.where(hi > -lo, hi, -lo)])
        g = _tensor_scale(be, mags) if spec.tensor_scale else None

        scale_codes = _scale_codes(be, mags, spec, g)
        scale = be.lookup(spec.scale_format.values, scale_codes)
        if spec.signed_scales:
            divisor = be.where(blocks > 0, scale[..., 0:1], scale[..., 1:2])
        else:
            divisor = scale[..., 0:1]
        if g is not None:
            divisor = divisor * g
        magnitude = be.bucket(abs(blocks / divisor), E2M1.midpoints)
        negative = be.u8((blocks < 0) & (magnitude != 0)) << 3  # E2M1 sign bit
        keep = (divisor > 0) & ~bad[..., None]  # an underflowed scale or bad block: code 0
        codes = be.where(keep, magnitude | negative, 0)

    scale_codes = be.where(bad[..., None], spec.scale_format.nan_code, scale_codes)
    codes = codes.reshape(*x.shape[:-1], nb * bs)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return Quantized(be.u8(packed), be.u8(scale_codes), g)


def _check_packed(q: Quantized, spec: FormatSpec) -> int:
    codes_len, scales = q.codes.shape[-1], q.scales.shape
    if len(scales) < 2 or scales[-1] != spec.scales_per_block:
        raise ValueError(
            f"{spec.name} scales must have shape [..., blocks, {spec.scales_per_block}], "
            f"got {list(scales)}"
        )
    nb = scales[-2]
    if codes_len * 2 != nb * spec.block_size:
        raise ValueError(
            f"{spec.name} codes hold {codes_len * 2} elements but the scales describe "
            f"{nb} blocks of {spec.block_size}"
        )
    if spec.tensor_scale and q.tensor_scale is None:
        raise ValueError(f"{spec.name} needs its float32 tensor scale")
    return nb


def dequantize(q: Quantized, fmt: str | FormatSpec = DEFAULT, k: int | None = None):
    """float32 values of packed codes and scales; k, the original length, trims the padding
    (ValueError unless ceil(k / B) is the number of blocks)."""
    spec = get(fmt)
    nb = _check_packed(q, spec)
    be = backend_for(q.codes)
    packed = q.codes
    codes = be.stack_last([packed & 0x0F, packed >> 4])
    codes = codes.reshape(*packed.shape[:-1], nb, spec.block_size)
    scale = be.lookup(spec.scale_format.values, q.scales)
    if spec.signed_scales:
        negative = (codes & E2M1.sign_bit) != 0
        scale = be.where(negative, scale[..., 1:2], scale[..., 0:1])
    else:
        scale = scale[..., 0:1]
    with np.errstate(invalid="ignore", over="ignore"):
        y = be.lookup(E2M1.values, codes) * scale
        if spec.tensor_scale:
            y = y * q.tensor_scale
    y = y.reshape(*packed.shape[:-1], nb * spec.block_size)
    return y if k is None else y[..., : _checked_k(k, nb, spec)]


def _checked_k(k, nb: int, spec: FormatSpec) -> int:
    """k as the length the packed blocks hold: (nb - 1) * B < k <= nb * B (k = 0 for nb = 0)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    low, high = max(nb - 1, 0) * spec.block_size, nb * spec.block_size
    if not (low < k <= high or k == high == 0):
        raise ValueError(
            f"k={k} does not fit {nb} block(s) of {spec.block_size} ({spec.name}): "
            f"expected {low + 1 if nb else 0}..{high}"
        )
    return int(k)


def fake_quant(x, fmt: str | FormatSpec = DEFAULT):
    """dequantize(quantize(x)) in x's dtype and shape (float16 saturates to ±65504)."""
    be = backend_for(x)
    y = dequantize(quantize(x, fmt), fmt, k=x.shape[-1])
    with np.errstate(invalid="ignore", over="ignore"):
        return be.cast_like(y, x)


def element_values(fmt: MiniFloat = E2M1) -> np.ndarray:
    """float32 value of every element code (16 for E2M1)."""
    return fmt.values.copy()
