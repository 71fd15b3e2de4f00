"""Properties over random inputs (hypothesis): numpy == torch bit for bit, signs, error bound."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amx_export import formats as F

SPECIAL = [0.0, -0.0, 1e-45, -1e-45, 1.2e-38, 3.4e38, -3.4e38, 6.0, -6.0, 0.25, 2.5, -5.0]


def float32_arrays(allow_non_finite: bool):
    elements = st.one_of(
        st.floats(width=32, allow_nan=allow_non_finite, allow_infinity=allow_non_finite),
        st.sampled_from(SPECIAL),
        st.floats(-8.0, 8.0, width=32),
    )
    shapes = st.tuples(st.integers(1, 3), st.integers(1, 70))
    return arrays(np.float32, shapes, elements=elements)


@settings(max_examples=150, deadline=None)
@given(x=float32_arrays(allow_non_finite=True), fmt=st.sampled_from(F.names()))
def test_numpy_equals_torch(x, fmt):
    q_np = F.quantize(x, fmt)
    q_t = F.quantize(torch.from_numpy(x), fmt)
    assert np.array_equal(q_np.codes, q_t.codes.numpy())
    assert np.array_equal(q_np.scales, q_t.scales.numpy())
    if F.get(fmt).tensor_scale:
        assert np.float32(q_np.tensor_scale) == np.float32(q_t.tensor_scale.item())
    y_np, y_t = F.fake_quant(x, fmt), F.fake_quant(torch.from_numpy(x), fmt).numpy()
    assert np.array_equal(y_np, y_t, equal_nan=True)
    with np.errstate(over="ignore"):
        xh = x.astype(np.float16)
    assert np.array_equal(
        F.fake_quant(xh, fmt), F.fake_quant(torch.from_numpy(xh), fmt).numpy(), equal_nan=True
    )


@settings(max_examples=150, deadline=None)
@given(x=float32_arrays(allow_non_finite=False), fmt=st.sampled_from(F.names()))
def test_sign_is_kept_or_zero(x, fmt):
    y = F.fake_quant(x, fmt)
    assert np.all((np.sign(y) == np.sign(x)) | (y == 0))


def _element_scales(q, spec, x):
    """Each element's effective scale (float64): the one its sign selects when quantizing."""
    scales = spec.scale_format.values[q.scales].astype(np.float64)
    k = x.shape[-1]
    shape = (*q.scales.shape[:-1], spec.block_size)
    positive = np.broadcast_to(scales[..., 0:1], shape).reshape(*x.shape[:-1], -1)[..., :k]
    negative = np.broadcast_to(scales[..., -1:], shape).reshape(*x.shape[:-1], -1)[..., :k]
    per = np.where(x < 0, negative, positive)
    return per * (float(q.tensor_scale) if spec.tensor_scale else 1.0)


@settings(max_examples=150, deadline=None)
@given(x=float32_arrays(allow_non_finite=False), fmt=st.sampled_from(F.names()))
def test_error_within_half_a_step_unless_saturated(x, fmt):
    spec = F.get(fmt)
    q = F.quantize(x, fmt)
    y = F.dequantize(q, fmt, k=x.shape[-1]).astype(np.float64)
    s = _element_scales(q, spec, x)
    x64 = x.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(x64) / s
    step = np.where(ratio < 2, 0.5, np.where(ratio < 4, 1.0, 2.0))
    checked = (s > 0) & (ratio <= 6) & np.isfinite(y)
    bound = 0.5 * step * s * (1 + 1e-6) + 1e-6 * np.abs(x64)
    assert np.all(np.abs(y - x64)[checked] <= bound[checked])
    # a saturated element sits at ±6 of its scale
    saturated = (s > 0) & (ratio > 6) & np.isfinite(y)
    assert np.allclose(np.abs(y[saturated]), 6 * s[saturated], rtol=1e-6)


@pytest.mark.parametrize("fmt", F.names())
def test_torch_path_keeps_device_and_dtype(fmt):
    x = torch.randn(8, 96, dtype=torch.float16)
    q = F.quantize(x, fmt)
    assert q.codes.dtype == torch.uint8 and q.scales.dtype == torch.uint8
    assert F.fake_quant(x, fmt).dtype == torch.float16
    assert F.dequantize(q, fmt).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("fmt", F.names())
def test_torch_cuda_equals_numpy(fmt):
    x = np.random.default_rng(5).standard_normal((64, 200)).astype(np.float32)
    q = F.quantize(torch.from_numpy(x).cuda(), fmt)
    ref = F.quantize(x, fmt)
    assert np.array_equal(q.codes.cpu().numpy(), ref.codes)
    assert np.array_equal(q.scales.cpu().numpy(), ref.scales)
