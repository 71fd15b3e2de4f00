"""The element and scale codecs: every code round-trips, rounding matches FORMAT.md."""

import numpy as np
import pytest

from amx_export.formats import E2M1, E4M3, E5M2, E8M0
from amx_export.formats.minifloat import round_fmt_formula

E2M1_VALUES = [0, 0.5, 1, 1.5, 2, 3, 4, 6]


def test_e2m1_table_and_nibble_layout():
    # bit 3 sign, bits 2..1 exponent, bit 0 mantissa (OCP MX / ONNX FLOAT4E2M1)
    assert E2M1.values[:8].tolist() == E2M1_VALUES
    assert E2M1.values[8:].tolist() == [-v for v in E2M1_VALUES]
    assert E2M1.values[0b0101] == 3.0 and E2M1.values[0b1111] == -6.0


@pytest.mark.parametrize("fmt", [E2M1, E5M2, E4M3], ids=lambda f: f.name)
def test_every_code_round_trips(fmt):
    codes = np.arange(2**fmt.bits, dtype=np.uint8)
    values = fmt.decode(codes)
    finite = np.isfinite(values)
    expected = np.where(codes == fmt.sign_bit, 0, codes)  # -0 encodes as code 0
    assert np.array_equal(fmt.encode(values[finite]), expected[finite])
    if fmt.nan_code is not None:
        assert np.isnan(values[fmt.nan_code])
        assert fmt.encode(np.float32("nan")) == fmt.nan_code


def test_e8m0_every_code_round_trips():
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(E8M0.encode(E8M0.decode(codes)), codes)
    assert E8M0.decode(127) == 1.0 and E8M0.decode(0) == 2.0**-127 and E8M0.decode(254) == 2.0**127


def test_fp8_special_codes():
    assert E5M2.decode(0x7C) == np.inf and np.isnan(E5M2.decode(0x7D))
    assert E5M2.decode(0x7B) == 57344 and E5M2.decode(0x01) == 2.0**-16
    assert E4M3.decode(0x7E) == 448 and np.isnan(E4M3.decode(0x7F)) and E4M3.decode(0x01) == 2.0**-9
    assert E4M3.decode(0x78) == 256  # no Inf in E4M3FN: 0x78 is a normal number


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.25, 0.5),
        (0.75, 1.0),
        (1.25, 1.5),
        (1.75, 2.0),
        (2.5, 3.0),
        (3.5, 4.0),
        (5.0, 6.0),
        (0.2499999, 0.0),
        (5.0 - 2**-21, 4.0),
        (6.5, 6.0),
        (1e30, 6.0),
        (-2.5, -3.0),
        (-5.0, -6.0),
    ],
)
def test_e2m1_ties_away_and_saturation(value, expected):
    assert E2M1.decode(E2M1.encode(np.float32(value))) == np.float32(expected)


def test_formula_needs_exact_arithmetic_in_subnormals():
    # FORMAT.md's floor(v/step + 0.5) evaluated in float32 gives 0.5 here (0.49999997 + 0.5
    # rounds to 1.0); the nearest E2M1 value is 0.
    v = np.nextafter(np.float32(0.25), np.float32(0))
    a = v / np.float32(0.5)
    assert np.floor(a + np.float32(0.5)) == 1.0  # the float32 pitfall itself
    assert E2M1.decode(E2M1.encode(v)) == 0.0
    assert round_fmt_formula(v, 2, 1, 6.0) == 0.0


def _float32_sample(fmt) -> np.ndarray:
    """Every float32 within 64 ulps of each midpoint and grid value, plus a dense sweep."""
    grid = np.abs(fmt.values[np.isfinite(fmt.values)])
    anchors = np.concatenate([fmt.midpoints, grid, [np.float32(fmt.max) * 2]]).astype(np.float32)
    bits = anchors.view(np.int32)[:, None] + np.arange(-64, 65, dtype=np.int32)
    near = bits[bits >= 0].view(np.float32)
    top = np.float32(fmt.max * 4).view(np.int32)
    sweep = np.arange(0, top, 7919, dtype=np.int32).view(np.float32)
    sample = np.concatenate([near, sweep])
    return np.concatenate([sample, -sample])


@pytest.mark.parametrize("fmt", [E2M1, E5M2, E4M3], ids=lambda f: f.name)
def test_rounding_equals_format_formula(fmt):
    v = _float32_sample(fmt)
    fast = fmt.decode(fmt.encode(v))
    reference = round_fmt_formula(v, fmt.ebits, fmt.mbits, fmt.max).astype(np.float32)
    mismatch = np.flatnonzero(fast != reference)
    assert mismatch.size == 0, f"{fmt.name}: {v[mismatch[:5]]} -> {fast[mismatch[:5]]}"
