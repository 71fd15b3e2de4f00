"""The CUDA kernels (plugins/cuda/) against amx_export.formats: codes and scales bit for bit,
fake-quant in every element type, matmul within float32 accumulation error on both the GEMV
and the tensor-core GEMM path. The GPU tests skip, with the reason, where there is no GPU;
what can be checked without one (the build, argument checks, workspace sizes, the error a
machine without a driver gets) runs everywhere."""

import ctypes
import shutil

import ml_dtypes
import numpy as np
import pytest
from kernel_checks import edge_cases, expected_matmul, extreme_weights

from amx_export import formats
from amx_export.plugins.cuda import GEMV_VARIANTS, CudaKernels, DeviceWeights, unavailable_reason

FORMATS = formats.names()
GPU_REASON = unavailable_reason()
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"CUDA: {GPU_REASON}")
DTYPES = ["float32", "float16", "bfloat16"]
NP_TYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _has_cuda_symbols(path) -> bool:
    return hasattr(ctypes.CDLL(str(path)), "amx_cuda_matmul")


def test_cuda_kernels_are_built_when_nvcc_is_present(kernels):
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc on this machine: the library is CPU-only by design")
    assert _has_cuda_symbols(kernels.lib._name), "nvcc is on PATH but the CUDA kernels are missing"


@pytest.fixture(scope="module")
def cuda_lib(kernels):
    if not _has_cuda_symbols(kernels.lib._name):
        pytest.skip("libamx_kernels was built without CUDA")
    return CudaKernels(kernels.lib._name).lib


def test_arguments_are_checked_before_any_cuda_call(cuda_lib):
    lib, buf = cuda_lib, ctypes.create_string_buffer(4096)
    p = (ctypes.addressof(buf) + 255) // 256 * 256  # aligned like a CUDA allocation
    args = (p, 1, 32, p, p, p, p, None)  # x, rows, k, codes, scales, g, workspace, stream
    assert lib.amx_cuda_quantize(b"int3", 0, *args) == 1
    assert lib.amx_cuda_quantize(b"amxfp4", 7, *args) == 5
    assert lib.amx_cuda_quantize(b"amxfp4", 0, p, 0, 32, p, p, p, p, None) == 2
    assert lib.amx_cuda_quantize(b"amxfp4", 0, None, 1, 32, p, p, p, p, None) == 3
    assert lib.amx_cuda_fake_quant(b"nvfp4", 0, p, 1, 0, p, p, None) == 2

    def matmul(act=b"none", dtype=0, m=4, n=8, codes=p, scales=p, workspace=p):
        return lib.amx_cuda_matmul(
            b"amxfp4", act, dtype, p, m, 32, codes, scales, 1.0, n, None, 0, p, workspace, None
        )

    # the kernels' 16- and 4-byte loads: a misaligned buffer is refused, not a CUDA fault
    assert matmul(codes=p + 8) == matmul(scales=p + 2) == matmul(workspace=p + 4) == 3
    assert b"aligned" in lib.amx_cpu_error_string(3)
    assert matmul(act=b"bogus") == 1
    assert matmul(dtype=3) == 5
    assert matmul(n=0) == 2
    assert matmul(m=0) == 0  # nothing to do, and no CUDA call
    assert b"element type" in lib.amx_cpu_error_string(5)


def test_workspace_sizes(cuda_lib):
    size = cuda_lib.amx_cuda_matmul_workspace
    # 256 bytes of header, then the activation operand of both kernels: bfloat16 planes
    # [m, K rounded up to 32], 1 for quantized or bfloat16 X, 2 for float16, 3 for float32
    assert size(b"amxfp4", b"amxfp4", 0, 16, 100) == 256 + 16 * 128 * 2
    assert size(b"amxfp4", b"amxfp4", 0, 1, 64) == 256 + 64 * 2
    assert size(b"amxfp4", b"amxfp4", 0, 40, 64) == 256 + 40 * 64 * 2
    assert size(b"nvfp4", b"none", 2, 40, 64) == 256 + 40 * 64 * 2
    assert size(b"nvfp4", b"none", 1, 40, 64) == 256 + 2 * 40 * 64 * 2
    assert size(b"nvfp4", None, 0, 3, 64) == 256 + 3 * 3 * 64 * 2
    assert size(b"amxfp4", b"bogus", 0, 17, 64) == 0
    assert cuda_lib.amx_cuda_quantize_workspace() == 256


def test_no_driver_is_an_error_not_a_crash(cuda_lib):
    if cuda_lib.amx_cuda_device_count() > 0:
        pytest.skip("this machine has a GPU: the GPU tests cover it")
    buf = ctypes.create_string_buffer(4096)
    p = ctypes.addressof(buf)
    # the first CUDA call fails, and the message names it: NVFP4 zeroes its amax slot first
    for fmt, first_call in ((b"amxfp4", b"activation kernel"), (b"nvfp4", b"cudaMemsetAsync")):
        rc = cuda_lib.amx_cuda_matmul(fmt, fmt, 0, p, 2, 32, p, p, 1.0, 4, None, 0, p, p, None)
        assert rc == 4
        assert cuda_lib.amx_cuda_last_error().startswith(first_call + b": cuda")


# ---- on a GPU --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda():
    if GPU_REASON is not None:
        pytest.skip(f"CUDA: {GPU_REASON}")
    return CudaKernels()


def _on_gpu(x: np.ndarray, dtype: str):
    import torch

    x32 = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x32.to(getattr(torch, dtype)).cuda()


def _host(t) -> np.ndarray:
    return t.float().cpu().numpy()


def _as_type(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to `dtype` the way the kernels store them (float16 saturates)."""
    if dtype == "float16":
        values = np.where(np.isnan(values), values, np.clip(values, -65504, 65504))
    return values.astype(NP_TYPES[dtype]).astype(np.float32)


@needs_gpu
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 16, 17, 32, 33, 100, 576])
def test_quantize_and_fake_quant_bit_exact(cuda, fmt, dtype, k):
    rng = np.random.default_rng(k)
    rows = [edge_cases(rng, k), rng.standard_normal((300, k)).astype(np.float32) * 3]
    for x in rows:
        xt = _on_gpu(x, dtype)
        x32 = _host(xt)  # the values the kernel sees
        expected, got = formats.quantize(x32, fmt), cuda.quantize(xt, fmt)
        np.testing.assert_array_equal(got.codes.cpu().numpy(), expected.codes)
        np.testing.assert_array_equal(got.scales.cpu().numpy(), expected.scales)
        if expected.tensor_scale is not None:
            assert np.float32(got.tensor_scale.item()) == np.float32(expected.tensor_scale)
        fq = _host(cuda.fake_quant(xt, fmt))
        np.testing.assert_array_equal(fq, _as_type(formats.fake_quant(x32, fmt), dtype))


def _check_matmul(cuda, fmt, act, dtype, m, k, n, rng, with_bias, weights=None, x_scale=1.0):
    x = rng.standard_normal((m, k)).astype(np.float32) * np.float32(x_scale)
    x[:, ::29] *= 40  # outlier channels
    if weights is None:
        weights = rng.standard_normal((n, k)).astype(np.float32)
    q = formats.quantize(weights, fmt)
    w = DeviceWeights.from_quantized(q, fmt, k)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    xt = _on_gpu(x, dtype)
    bias_t = None if bias is None else _on_gpu(bias, dtype)
    got = _host(cuda.matmul(xt, w, act, bias_t)).astype(np.float64)
    bias32 = None if bias_t is None else _host(bias_t)
    expected, bound = expected_matmul(_host(xt), q, fmt, act, k, bias32)
    eps = np.finfo(np.float32).eps
    tol = eps * (k + 4) * bound  # float32 accumulation; NVFP4's g applied once in the GEMM
    if dtype != "float32":
        tol = tol + np.abs(expected) * 2.0**-8  # the output type's rounding
    err = np.abs(got - expected)
    # the absolute slack is float32's rounding unit at the bottom of its range: the tiny
    # weight scales' outputs reach 1e-34, where a slack of 1e-30 hid a lost block
    assert np.all(err <= tol + k * 2.0**-149), (fmt, act, dtype, m, k, n, float(np.max(err - tol)))
    return got


@needs_gpu
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights_only", [False, True], ids=["w4a4", "w4a16"])
def test_matmul_is_fake_quant_x_times_dequant_w(cuda, fmt, dtype, weights_only):
    rng = np.random.default_rng(5)
    act = None if weights_only else fmt
    # GEMV (m <= 256) and GEMM shapes, K not a multiple of 32, N not a multiple of the tile
    shapes = [(1, 100, 37), (3, 576, 64), (9, 4100, 40), (16, 33, 16), (17, 17, 5),
              (64, 256, 48), (200, 300, 70), (300, 96, 130), (2048, 64, 40)]  # fmt: skip
    for i, (m, k, n) in enumerate(shapes):
        _check_matmul(cuda, fmt, act, dtype, m, k, n, rng, with_bias=i % 2 == 0)


@needs_gpu
@pytest.mark.parametrize("variant", GEMV_VARIANTS[1:])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights_only", [False, True], ids=["w4a4", "w4a16"])
def test_gemv_variants_give_the_baselines_bits(cuda, variant, fmt, dtype, weights_only):
    # every variant within the bounds and bit for bit the baseline's (the same products in
    # the same order): m where the fused (<= 8) and stream (<= 16) parts run, K over several
    # rounds of the stream ring, extreme weight scales
    act = None if weights_only else fmt
    shapes = [(1, 4100, 40, False), (3, 576, 64, False), (8, 100, 37, False),
              (16, 33, 16, False), (12, 300, 24, True)]  # fmt: skip
    try:
        for m, k, n, extreme in shapes:
            w = extreme_weights(np.random.default_rng(k), n, k) if extreme else None
            scale = 2.0**10 if extreme else 1.0
            if extreme and dtype == "float16":
                continue  # would overflow (the tiny/huge test's reason)
            got = []
            for v in ("baseline", variant):
                cuda.set_gemv_variant(v)
                rng = np.random.default_rng(m * k)
                got.append(_check_matmul(cuda, fmt, act, dtype, m, k, n, rng, m % 2 == 1, w, scale))
            np.testing.assert_array_equal(got[1], got[0], err_msg=f"{variant} {m}x{k}x{n}")
    finally:
        cuda.set_gemv_variant("baseline")


@needs_gpu
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # float16 would overflow
def test_matmul_with_tiny_and_huge_weight_scales(cuda, fmt, dtype):
    rng = np.random.default_rng(11)
    for act in (fmt, None):
        for m in (3, 12, 40, 300):  # GEMV with 1, 2 and 8 MMA tiles of rows; the GEMM
            w = extreme_weights(rng, 24, 300)
            _check_matmul(cuda, fmt, act, dtype, m, 300, 24, rng, False, w, 2.0**10)


@needs_gpu
def test_matmul_batched_3d_and_nan_propagation(cuda):
    import torch

    rng = np.random.default_rng(3)
    for m in (5, 40):  # GEMV and GEMM
        x = rng.standard_normal((2, m, 64)).astype(np.float32)
        x[1, 2, 10] = np.nan
        q = formats.quantize(rng.standard_normal((12, 64)).astype(np.float32), "amxfp4")
        w = DeviceWeights.from_quantized(q, "amxfp4", 64)
        y = _host(cuda.matmul(torch.from_numpy(x).cuda(), w, "amxfp4"))
        assert y.shape == (2, m, 12)
        flat = y.reshape(2 * m, 12)
        assert np.isnan(flat[m + 2]).all() and np.isfinite(np.delete(flat, m + 2, 0)).all()
