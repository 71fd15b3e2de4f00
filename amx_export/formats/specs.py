"""The block formats of FORMAT.md and their registry by name.

A format is FP4 E2M1 elements in blocks of ``block_size`` along the last axis, with either
one scale per block (MXFP4, NVFP4) or two, one for the block's positive values and one for
its negative values (AMXFP4). How a scale is derived from the block's magnitude:

- ``rule="minifloat"``: ``s = m / 6`` (``/ g`` too for NVFP4), rounded to the scale format
  (E5M2 or E4M3FN) to nearest, ties away from zero, saturating.
- ``rule="pot"``: ``s = 2**(floor(log2 m) - 2)``, the exponent clamped to E8M0's range.

``zero_scale`` replaces a scale whose unrounded value is exactly 0 (a side of the block with
no element): 1.0 for AMXFP4 (FORMAT.md step 2), 2**-127 for MXFP4, none (0) for NVFP4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .minifloat import E2M1, E4M3, E5M2, E8M0, MiniFloat, PowerOfTwo

# E8M0 codes 1..252 start at m = 2**(code - 125); 253 and 254 need m >= 2**128 (not finite).
_POT_EDGES = np.ldexp(np.float32(1.0), np.arange(1, 253) - 125).astype(np.float32)


@dataclass(frozen=True)
class FormatSpec:
    name: str
    block_size: int
    scale_format: MiniFloat | PowerOfTwo
    scales_per_block: int  # 2: positive scale then negative scale (AMXFP4); 1: one per block
    rule: str  # "minifloat" or "pot"
    zero_scale: float
    tensor_scale: bool  # NVFP4's float32 per-tensor scale g = amax / (448 * 6)
    description: str

    element_format = E2M1

    @property
    def bits_per_element(self) -> float:
        """Storage cost: 4 element bits plus the block's scale bits (tensor scale not counted)."""
        scale_bits = self.scales_per_block * self.scale_format.bits
        return self.element_format.bits + scale_bits / self.block_size

    @property
    def signed_scales(self) -> bool:
        return self.scales_per_block == 2

    @property
    def scale_edges(self) -> np.ndarray:
        """Sorted float32 thresholds: a scale's code is how many of them are <= its input.

        minifloat: the input is s = m / 6 (/ g), the edges are the scale format's midpoints
        (round to nearest, ties away, saturating). pot: the input is m itself and edge c-1 is
        2**(c - 127 + 2), so the count is the E8M0 code of 2**(floor(log2 m) - 2), clamped.
        """
        if self.rule == "minifloat":
            return self.scale_format.midpoints
        return _POT_EDGES

    @property
    def zero_scale_code(self) -> int:
        """The scale code used when the scale's input is exactly 0."""
        return int(self.scale_format.encode(np.float32(self.zero_scale)))


AMXFP4 = FormatSpec(
    "amxfp4",
    32,
    E5M2,
    2,
    "minifloat",
    1.0,
    False,
    "AMXFP4, E5M2 scales per sign (the paper's AMXFP4-FP8)",
)
AMXFP4_E4M3 = FormatSpec(
    "amxfp4-e4m3",
    32,
    E4M3,
    2,
    "minifloat",
    1.0,
    False,
    "AMXFP4, E4M3FN scales per sign",
)
AMXFP4_E8M0 = FormatSpec(
    "amxfp4-e8m0",
    32,
    E8M0,
    2,
    "pot",
    1.0,
    False,
    "AMXFP4, power-of-two scales per sign (MXFP4's rule applied per sign)",
)
MXFP4 = FormatSpec(
    "mxfp4",
    32,
    E8M0,
    1,
    "pot",
    2.0**-127,
    False,
    "OCP MXFP4, one E8M0 scale per block",
)
NVFP4 = FormatSpec(
    "nvfp4",
    16,
    E4M3,
    1,
    "minifloat",
    0.0,
    True,
    "NVFP4, one E4M3FN scale per 16 plus a float32 tensor scale",
)

FORMATS: dict[str, FormatSpec] = {
    f.name: f for f in (AMXFP4, AMXFP4_E4M3, AMXFP4_E8M0, MXFP4, NVFP4)
}
DEFAULT = AMXFP4.name


def get(fmt: str | FormatSpec) -> FormatSpec:
    """The spec of a format given by name (or a spec, returned as is)."""
    if isinstance(fmt, FormatSpec):
        return fmt
    try:
        return FORMATS[fmt]
    except (KeyError, TypeError):
        known = ", ".join(FORMATS)
        raise ValueError(f"unknown format {fmt!r}; known formats: {known}") from None


def names() -> list[str]:
    return list(FORMATS)
