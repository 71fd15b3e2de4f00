"""Bit-level codecs of the small float formats in FORMAT.md: E2M1, FP8 E5M2 / E4M3FN, E8M0.

Every format is described once here (bits, bias, saturation value, NaN code); the block
formats in ``specs`` and the algorithm in ``block`` only read these objects.

Rounding is FORMAT.md's ``round_fmt``: round to nearest, ties away from zero, saturate to
±max. It is done by binary search over the midpoints between neighbouring representable
magnitudes (each midpoint is exact in float32), which is exact for every float32 input and
yields the code directly. ``round_fmt_formula`` is the page's formula evaluated in float64,
kept as an independent reference that the tests hold the fast path to.

Why not the formula in float32: ``floor(|v|/step + 0.5)`` rounds twice in float32 inside a
format's subnormal range (e.g. E2M1 of 0.25 - 2**-27 would give 0.5, not 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class MiniFloat:
    """A sign-magnitude float format with subnormals (OCP MX / ONNX FLOAT4/FLOAT8 layouts).

    ``special`` says how the all-ones exponent is used: ``"ieee"`` (Inf and NaNs, E5M2),
    ``"fn"`` (only the all-ones code is NaN, E4M3FN) or ``"none"`` (every code finite, E2M1).
    """

    name: str
    ebits: int
    mbits: int
    max: float
    special: str
    nan_code: int | None
    values: np.ndarray = field(init=False, repr=False, compare=False)
    midpoints: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = _decode_table(self)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "midpoints", _midpoints(values[: self.max_code + 1]))
        assert values[self.max_code] == self.max, self

    @property
    def bias(self) -> int:
        return 2 ** (self.ebits - 1) - 1

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def sign_bit(self) -> int:
        return 1 << (self.ebits + self.mbits)

    def encode(self, v) -> np.ndarray:
        """uint8 codes of float32 values: nearest, ties away from zero, saturating to ±max.

        -0.0 encodes as code 0; NaN as the NaN code (E2M1 has none: NaN is an error there).
        """
        v = np.asarray(v, dtype=np.float32)
        nan = np.isnan(v)
        if self.nan_code is None and nan.any():
            raise ValueError(f"{self.name} has no NaN encoding")
        magnitude = np.searchsorted(self.midpoints, np.abs(v), side="right")
        sign = np.where((v < 0) & (magnitude != 0), self.sign_bit, 0)
        codes = np.where(nan, self.nan_code or 0, magnitude | sign)
        return codes.astype(np.uint8)

    def decode(self, codes) -> np.ndarray:
        return self.values[np.asarray(codes, dtype=np.uint8)]

    @property
    def max_code(self) -> int:
        """Code of the largest finite magnitude (positive codes grow with their value)."""
        return int(np.flatnonzero(_decode_table(self) == self.max)[0])


@dataclass(frozen=True)
class PowerOfTwo:
    """E8M0: an unsigned biased exponent, value 2**(code - 127); code 0xFF is NaN."""

    name: str = "e8m0"
    ebits: int = 8
    bias: int = 127
    nan_code: int = 0xFF
    bits: int = 8
    values: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exponents = np.arange(256) - self.bias
        exponents[self.nan_code] = 0
        values = np.ldexp(np.float32(1.0), exponents).astype(np.float32)
        values[self.nan_code] = np.nan
        object.__setattr__(self, "values", values)

    def encode(self, v) -> np.ndarray:
        """uint8 codes of 2**floor(log2 v) for v > 0 (exponent clamped); NaN gives 0xFF."""
        v = np.asarray(v, dtype=np.float32)
        exponent = np.clip(np.frexp(v)[1] - 1, self.min_exponent, self.max_exponent)
        return np.where(np.isnan(v), self.nan_code, exponent + self.bias).astype(np.uint8)

    def decode(self, codes) -> np.ndarray:
        return self.values[np.asarray(codes, dtype=np.uint8)]

    @property
    def min_exponent(self) -> int:
        return -self.bias

    @property
    def max_exponent(self) -> int:
        return self.nan_code - 1 - self.bias


def _decode_table(fmt: MiniFloat) -> np.ndarray:
    """float32 value of every code, computed from the bit fields."""
    codes = np.arange(2**fmt.bits)
    sign = np.where(codes & fmt.sign_bit, -1.0, 1.0)
    exp = (codes >> fmt.mbits) & (2**fmt.ebits - 1)
    man = codes & (2**fmt.mbits - 1)
    subnormal = man * 2.0 ** (1 - fmt.bias - fmt.mbits)
    normal = (1.0 + man / 2.0**fmt.mbits) * 2.0 ** (exp - fmt.bias)
    values = sign * np.where(exp == 0, subnormal, normal)
    all_ones = exp == 2**fmt.ebits - 1
    if fmt.special == "ieee":
        values = np.where(all_ones & (man == 0), sign * np.inf, values)
        values = np.where(all_ones & (man != 0), np.nan, values)
    elif fmt.special == "fn":
        values = np.where(all_ones & (man == 2**fmt.mbits - 1), np.nan, values)
    return values.astype(np.float32)


def _midpoints(magnitudes: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive magnitudes; each must be exact in float32."""
    wide = magnitudes.astype(np.float64)
    mid = (wide[:-1] + wide[1:]) / 2
    assert np.array_equal(mid.astype(np.float32).astype(np.float64), mid)
    return mid.astype(np.float32)


E2M1 = MiniFloat("e2m1", ebits=2, mbits=1, max=6.0, special="none", nan_code=None)
E5M2 = MiniFloat("e5m2", ebits=5, mbits=2, max=57344.0, special="ieee", nan_code=0x7F)
# OCP E4M3FN saturates at 448 (the paper authors' code clamps at 480; FORMAT.md takes 448).
E4M3 = MiniFloat("e4m3", ebits=4, mbits=3, max=448.0, special="fn", nan_code=0x7F)
E8M0 = PowerOfTwo()

SCALE_FORMATS = {f.name: f for f in (E5M2, E4M3, E8M0)}


def round_fmt_formula(v, ebits: int, mbits: int, max_value: float) -> np.ndarray:
    """FORMAT.md's formula, in float64 (exact for float32 input): the reference for tests."""
    v = np.asarray(v, dtype=np.float64)
    bias = 2 ** (ebits - 1) - 1
    mag = np.abs(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.maximum(np.floor(np.log2(np.where(mag > 0, mag, 1.0))), 1 - bias)
        # log2 in float64 can land on the wrong side of a power of two: correct it exactly.
        e = np.where(np.ldexp(1.0, e.astype(int)) > mag, e - 1, e)
        e = np.where(np.ldexp(1.0, (e + 1).astype(int)) <= mag, e + 1, e)
        e = np.maximum(e, 1 - bias)
        step = np.ldexp(1.0, (e - mbits).astype(int))
        r = np.minimum(max_value, np.floor(mag / step + 0.5) * step)
    return np.where(mag > 0, np.copysign(r, v), 0.0 * v)
