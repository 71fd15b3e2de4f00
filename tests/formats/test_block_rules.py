"""Hand-computed examples, one per rule of FORMAT.md."""

import ml_dtypes
import numpy as np
import pytest
import torch
from kernel_checks import unpack_codes

from amx_export import formats as F
from amx_export.formats import E4M3, E5M2

E5M2_ONE, E5M2_HALF = 0x3C, 0x38


def block(*values, k=32):
    x = np.zeros(k, np.float32)
    x[: len(values)] = values
    return x


def test_signed_extremes_not_abs():
    q = F.quantize(block(-6.0, 3.0), "amxfp4")
    # pmax = 3 -> Sp = 0.5; nmax = 6 -> Sn = 1 (one |x| scale would give 1 for both)
    assert q.scales.tolist() == [[E5M2_HALF, E5M2_ONE]]
    assert unpack_codes(q.codes)[:2].tolist() == [0b1111, 0b0111]  # -6 and +6 on their grids
    assert F.dequantize(q, "amxfp4", k=2).tolist() == [-6.0, 3.0]


def test_packing_low_nibble_first():
    q = F.quantize(block(0.5, 6.0, -1.0), "amxfp4")  # Sp = 1, Sn = 1/6 -> 0.1640625 in E5M2
    assert q.codes[0] == 0b0111_0001  # element 0 (0.5 -> code 1) low, element 1 (6 -> 7) high
    assert q.codes.shape == (16,) and q.scales.shape == (1, 2)


def test_zero_scale_becomes_one():
    q = F.quantize(block(1.0, 2.0, 6.0), "amxfp4")  # no negative element
    assert q.scales.tolist() == [[E5M2_ONE, E5M2_ONE]]
    q = F.quantize(block(-1.0, -6.0), "amxfp4-e8m0")  # no positive element
    assert q.scales[0, 0] == 127


@pytest.mark.parametrize(
    "x, code",
    [
        (0.25, 1),
        (0.75, 2),
        (1.25, 3),
        (1.75, 4),
        (2.5, 5),
        (3.5, 6),
        (5.0, 7),
        (-0.25, 9),
        (-2.5, 13),
        (-5.0, 15),
    ],
)
def test_ties_away_from_zero(x, code):
    q = F.quantize(block(6.0, -6.0, x), "amxfp4")  # both scales exactly 1.0
    assert q.scales.tolist() == [[E5M2_ONE, E5M2_ONE]]
    assert unpack_codes(q.codes)[2] == code


def test_saturation_when_scale_rounds_down():
    # pmax = 6.6 -> sp = 1.1 -> E5M2 rounds down to 1.0, so 6.6 / 1.0 saturates to 6
    x = block(6.6, 1.0)
    q = F.quantize(x, "amxfp4")
    assert q.scales[0, 0] == E5M2_ONE
    assert F.fake_quant(x, "amxfp4")[:2].tolist() == [6.0, 1.0]


def test_scale_underflow_gives_code_zero():
    tiny = np.float32(6 * 2.0**-18)  # sp = 2**-18 < half of E5M2's smallest 2**-16
    q = F.quantize(block(tiny, -3.0), "amxfp4")
    assert q.scales.tolist() == [[0x00, E5M2_HALF]]
    assert unpack_codes(q.codes)[:2].tolist() == [0, 0b1111]
    assert F.fake_quant(block(tiny, -3.0), "amxfp4")[:2].tolist() == [0.0, -3.0]


def test_scale_that_underflows_float32_division_becomes_one():
    x = block(np.float32(1e-45))  # the smallest subnormal: 1e-45 / 6 == 0 in float32
    assert F.quantize(x, "amxfp4").scales.tolist() == [[E5M2_ONE, E5M2_ONE]]
    assert F.fake_quant(x, "amxfp4")[0] == 0.0


@pytest.mark.parametrize("fmt", F.names())
def test_zeros(fmt):
    x = np.zeros((3, 64), np.float32)
    x[1] = -0.0
    q = F.quantize(x, fmt)
    assert not q.codes.any()
    y = F.dequantize(q, fmt)
    assert np.array_equal(y, np.zeros_like(y))


def test_zero_block_scale_codes():
    assert F.quantize(np.zeros(32, np.float32), "amxfp4").scales.tolist() == [[60, 60]]
    assert F.quantize(np.zeros(32, np.float32), "amxfp4-e8m0").scales.tolist() == [[127, 127]]
    assert F.quantize(np.zeros(32, np.float32), "mxfp4").scales.tolist() == [[0]]
    q = F.quantize(np.zeros(16, np.float32), "nvfp4")
    assert q.scales.tolist() == [[0]] and q.tensor_scale == 1.0


def test_one_signed_blocks():
    pos = np.linspace(0.1, 12.0, 32, dtype=np.float32)
    for x in (pos, -pos):
        q = F.quantize(x, "amxfp4")
        codes = unpack_codes(q.codes)
        assert ((codes & 8) != 0).tolist() == ((x < 0) & ((codes & 7) != 0)).tolist()
        assert (codes & 7).min() == 0 and (codes & 7).max() == 7  # 0.1 rounds to 0, 12 -> 6
        assert np.all(np.sign(F.fake_quant(x, "amxfp4")) * np.sign(x) >= 0)
    # the used side: 12 / 6 = 2 -> E5M2 2.0 = 0x40, the empty side 1.0
    assert F.quantize(pos, "amxfp4").scales.tolist() == [[0x40, E5M2_ONE]]
    assert F.quantize(-pos, "amxfp4").scales.tolist() == [[E5M2_ONE, 0x40]]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fmt", F.names())
def test_non_finite_blocks(fmt, bad):
    spec = F.get(fmt)
    x = np.ones((2, 2 * spec.block_size), np.float32)
    x[0, 3] = bad
    q = F.quantize(x, fmt)
    assert q.scales[0, 0].tolist() == [spec.scale_format.nan_code] * spec.scales_per_block
    assert not unpack_codes(q.codes)[0, : spec.block_size].any()
    y = F.dequantize(q, fmt)
    assert np.isnan(y[0, : spec.block_size]).all()
    assert not np.isnan(y[0, spec.block_size :]).any() and not np.isnan(y[1]).any()
    assert q.scales[0, 1].tolist() != [spec.scale_format.nan_code] * spec.scales_per_block


def test_nan_scale_codes():
    assert F.get("amxfp4").scale_format.nan_code == 0x7F
    assert F.get("amxfp4-e4m3").scale_format.nan_code == 0x7F
    assert F.get("mxfp4").scale_format.nan_code == 0xFF


@pytest.mark.parametrize("fmt", F.names())
def test_k_not_multiple_of_block(fmt):
    spec = F.get(fmt)
    k = spec.block_size + 5
    x = np.random.default_rng(0).standard_normal((3, k)).astype(np.float32)
    q = F.quantize(x, fmt)
    assert q.codes.shape == (3, spec.block_size) and q.scales.shape == (3, 2, spec.scales_per_block)
    padded = np.zeros((3, 2 * spec.block_size), np.float32)
    padded[:, :k] = x
    q_padded = F.quantize(padded, fmt)
    assert np.array_equal(q.codes, q_padded.codes) and np.array_equal(q.scales, q_padded.scales)
    assert F.dequantize(q, fmt).shape == (3, 2 * spec.block_size)
    assert F.fake_quant(x, fmt).shape == x.shape
    assert not unpack_codes(q.codes)[:, k:].any()  # the padding encodes to 0


def test_mxfp4_example():
    q = F.quantize(block(6.0, -0.75, 0.2), "mxfp4")
    assert q.scales.tolist() == [[127]]  # amax 6 -> 2**(2 - 2) = 1
    assert F.dequantize(q, "mxfp4", k=3).tolist() == [6.0, -1.0, 0.0]
    q = F.quantize(block(100.0), "mxfp4")  # 2**(6 - 2) = 16: 100 / 16 = 6.25 -> 6
    assert q.scales.tolist() == [[131]] and F.dequantize(q, "mxfp4", k=1).tolist() == [96.0]


def test_amxfp4_e8m0_example():
    x = block(100.0, -0.75)
    q = F.quantize(x, "amxfp4-e8m0")
    assert q.scales.tolist() == [[131, 127 - 3]]  # 2**(6-2) and 2**(-1-2)
    assert F.dequantize(q, "amxfp4-e8m0", k=2).tolist() == [96.0, -0.75]


def test_amxfp4_e4m3_example():
    x = block(3000.0, -7.0)  # 3000/6 = 500 saturates to 448; 7/6 = 1.1667 -> 1.125
    q = F.quantize(x, "amxfp4-e4m3")
    assert E4M3.decode(q.scales[0]).tolist() == [448.0, 1.125]
    assert F.dequantize(q, "amxfp4-e4m3", k=2).tolist() == [2688.0, -6.75]


def test_nvfp4_example():
    x = np.zeros(32, np.float32)
    x[:3] = [2688.0, -1.0, 0.5]  # block 0: amax 2688; block 1 (elements 16..31): zeros
    q = F.quantize(x, "nvfp4")
    assert q.tensor_scale == np.float32(1.0)  # g = 2688 / (448 * 6)
    assert E4M3.decode(q.scales[:, 0]).tolist() == [448.0, 0.0]
    assert F.dequantize(q, "nvfp4", k=32)[:3].tolist() == [2688.0, 0.0, 0.0]
    y = F.fake_quant(np.float32([12.0, -3.0] + [0] * 14), "nvfp4")
    g = np.float32(12.0) / np.float32(2688.0)
    assert F.quantize(np.float32([12.0] + [0] * 15), "nvfp4").tensor_scale == g
    expected = [np.float32(6 * 448.0) * g, np.float32(-1.5 * 448) * g]
    assert y[:2].tolist() == expected


def test_e5m2_scale_rounding_to_nearest():
    x = block(7.0)  # 7 / 6 = 1.1667 -> E5M2 1.25
    assert E5M2.decode(F.quantize(x, "amxfp4").scales[0, 0]) == 1.25


@pytest.mark.parametrize("fmt", F.names())
def test_float16_and_bfloat16(fmt):
    x32 = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32) * 10
    x16 = x32.astype(np.float16)
    y16 = F.fake_quant(x16, fmt)
    assert y16.dtype == np.float16
    assert np.array_equal(y16, F.fake_quant(x16.astype(np.float32), fmt).astype(np.float16))
    xb = x32.astype(ml_dtypes.bfloat16)
    yb = F.fake_quant(xb, fmt)
    assert yb.dtype == ml_dtypes.bfloat16
    yt = F.fake_quant(torch.from_numpy(x32).to(torch.bfloat16), fmt)
    assert yt.dtype == torch.bfloat16
    assert np.array_equal(yt.float().numpy(), yb.astype(np.float32))


def test_float16_output_saturates():
    from amx_export.formats.backend import NumpyBackend, TorchBackend

    y = np.float32([70000.0, -70000.0, np.nan])
    assert NumpyBackend.cast_like(y, np.float16([0]))[:2].tolist() == [65504.0, -65504.0]
    t = TorchBackend.cast_like(torch.from_numpy(y), torch.zeros(1, dtype=torch.float16))
    assert t[:2].tolist() == [65504.0, -65504.0] and torch.isnan(t[2])


@pytest.mark.parametrize("shape", [(64,), (2, 3, 4, 96)])
@pytest.mark.parametrize("fmt", F.names())
def test_one_and_four_dimensional(fmt, shape):
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    q = F.quantize(x, fmt)
    flat = F.quantize(x.reshape(-1, shape[-1]), fmt)
    assert np.array_equal(q.codes.reshape(flat.codes.shape), flat.codes)
    assert np.array_equal(q.scales.reshape(flat.scales.shape), flat.scales)
    assert F.fake_quant(x, fmt).shape == shape


def test_unknown_format_lists_known():
    with pytest.raises(ValueError, match="amxfp4, amxfp4-e4m3, amxfp4-e8m0, mxfp4, nvfp4"):
        F.get("fp4")


def test_spec_fields():
    assert F.get("amxfp4").bits_per_element == 4.5
    assert F.get("mxfp4").bits_per_element == 4.25
    assert F.get("nvfp4").block_size == 16
    assert F.get("amxfp4").scale_format is E5M2


def test_rejects_integer_input_and_mismatched_packing():
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        F.quantize(np.arange(32), "amxfp4")
    q = F.quantize(np.ones(64, np.float32), "amxfp4")
    with pytest.raises(ValueError, match="blocks"):
        F.dequantize(F.Quantized(q.codes[:16], q.scales), "amxfp4")
    with pytest.raises(ValueError, match="scales must have shape"):
        F.dequantize(q, "mxfp4")


@pytest.mark.parametrize("k", [-5, 0, 32, 97, 200])
def test_dequantize_refuses_k_that_does_not_fit_the_blocks(k):
    q = F.quantize(np.ones(70, np.float32), "amxfp4")  # 3 blocks: k must be 65..96
    with pytest.raises(ValueError, match=f"k={k} does not fit 3 block"):
        F.dequantize(q, "amxfp4", k=k)
    assert F.dequantize(q, "amxfp4", k=65).shape == (65,)
    assert F.dequantize(q, "amxfp4", k=96).shape == (96,)
    with pytest.raises(TypeError):
        F.dequantize(q, "amxfp4", k=70.0)
