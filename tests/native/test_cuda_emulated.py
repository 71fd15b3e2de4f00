"""The CUDA kernels' source run on the host (tests/native/cuda_emulation/): each CUDA thread a
std::thread, mma.sync and ldmatrix emulated across the warp's lanes, so machines without a GPU
still check the quantize, fake-quant, GEMV and GEMM kernels' indexing and numerics, and the
C ABI of api.cu, against amx_export.formats. Not covered: speed, real device memory, the
hardware's MMA.
tests/native/test_cuda_kernels.py covers those on a GPU."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from kernel_checks import edge_cases, expected_matmul, extreme_weights

from amx_export import formats
from amx_export.plugins.cuda import GEMV_VARIANTS

ROOT = Path(__file__).resolve().parents[2]
EMULATION = Path(__file__).parent / "cuda_emulation"
DTYPES = {
    "float32": (0, np.float32),
    "float16": (1, np.float16),
    "bfloat16": (2, ml_dtypes.bfloat16),
}
I64 = ctypes.c_int64


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed: cannot build the CUDA host emulation")
    out = tmp_path_factory.mktemp("cuda_emulation") / "libamx_cuda_emulated.so"
    command = [
        gxx, "-std=c++17", "-O1", "-pthread", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
        "-Wno-unknown-pragmas", "-include", str(EMULATION / "cuda_host.h"),
        *(f"-I{ROOT / 'plugins' / d}" for d in ("include", "cpu", "cuda")),
        "-x", "c++", str(ROOT / "plugins/cuda/api.cu"), str(EMULATION / "launch.cc"),
        str(ROOT / "plugins/cpu/errors.cpp"), "-o", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    lib = ctypes.CDLL(str(out))
    lib.amx_cuda_last_error.restype = ctypes.c_char_p
    lib.amx_cpu_error_string.restype = ctypes.c_char_p
    lib.amx_cuda_gemv_variant.restype = ctypes.c_char_p
    lib.path = out
    return lib


def _ptr(a: np.ndarray | None):
    return None if a is None else ctypes.c_void_p(a.ctypes.data)


def _check(lib, rc: int) -> None:
    assert rc == 0, lib.amx_cpu_error_string(rc).decode() + " " + lib.amx_cuda_last_error().decode()


def _check_quantize_and_fake_quant(emu, fmt, dtype, x):
    code, np_type = DTYPES[dtype]
    spec = formats.get(fmt)
    x32 = x.astype(np.float32)
    (rows, k), nb = x.shape, -(-x.shape[1] // spec.block_size)
    codes = np.zeros((rows, nb * spec.block_size // 2), np.uint8)
    scales = np.zeros((rows, nb, spec.scales_per_block), np.uint8)
    g, ws = np.zeros(1, np.float32), np.zeros(64, np.uint32)
    _check(emu, emu.amx_cuda_quantize(
        fmt.encode(), code, _ptr(x), I64(rows), I64(k), _ptr(codes), _ptr(scales), _ptr(g),
        _ptr(ws), None,
    ))  # fmt: skip
    expected = formats.quantize(x32, fmt)
    np.testing.assert_array_equal(codes, expected.codes)
    np.testing.assert_array_equal(scales, expected.scales)
    if expected.tensor_scale is not None:
        assert g[0] == np.float32(expected.tensor_scale)
    y = np.empty_like(x)
    _check(emu, emu.amx_cuda_fake_quant(
        fmt.encode(), code, _ptr(x), I64(rows), I64(k), _ptr(y), _ptr(ws), None
    ))  # fmt: skip
    fq = formats.fake_quant(x32, fmt)
    if dtype == "float16":  # the float16 output saturates (FORMAT.md)
        fq = np.where(np.isnan(fq), fq, np.clip(fq, -65504, 65504))
    np.testing.assert_array_equal(y.astype(np.float32), fq.astype(np_type).astype(np.float32))


def _edge_rows(dtype, k, repeat=1):
    with np.errstate(over="ignore"):  # float16 turns the huge rows into +-Inf: also a case
        x = edge_cases(np.random.default_rng(k), k).astype(DTYPES[dtype][1])
    return np.ascontiguousarray(np.tile(x, (repeat, 1)))


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 17, 33, 100])
def test_quantize_and_fake_quant_bit_exact(emu, fmt, dtype, k):
    # few rows: fake-quant takes the warp-per-block kernel
    _check_quantize_and_fake_quant(emu, fmt, dtype, _edge_rows(dtype, k))


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", DTYPES)
def test_fake_quant_of_many_rows_bit_exact(emu, fmt, dtype):
    # 1100 rows x 4 units of 32: past kWarpOperandMaxUnits, the thread-per-block kernel
    _check_quantize_and_fake_quant(emu, fmt, dtype, _edge_rows(dtype, 100, repeat=100))


def _check_matmul(emu, fmt, act, dtype, m, k, n, rng, with_bias, weights=None, x_scale=1.0):
    code, np_type = DTYPES[dtype]
    x = rng.standard_normal((m, k)).astype(np.float32) * np.float32(x_scale)
    x[:, ::29] *= 40
    x = x.astype(np_type)
    if weights is None:
        weights = rng.standard_normal((n, k)).astype(np.float32)
    q = formats.quantize(weights, fmt)
    bias = rng.standard_normal(n).astype(np_type) if with_bias else None
    g = float(q.tensor_scale) if q.tensor_scale is not None else 1.0
    act_name = (act or "none").encode()
    size = emu.amx_cuda_matmul_workspace(fmt.encode(), act_name, code, I64(m), I64(k))
    ws = np.zeros(size // 4 + 1, np.uint32)
    y = np.zeros((m, n), np_type)
    _check(emu, emu.amx_cuda_matmul(
        fmt.encode(), act_name, code, _ptr(x), I64(m), I64(k),
        _ptr(np.ascontiguousarray(q.codes)), _ptr(np.ascontiguousarray(q.scales)),
        ctypes.c_float(g), I64(n), _ptr(bias), code, _ptr(y), _ptr(ws), None,
    ))  # fmt: skip
    b32 = None if bias is None else bias.astype(np.float32)
    expected, bound = expected_matmul(x.astype(np.float32), q, fmt, act, k, b32)
    # float32 accumulation (NVFP4's g applied once at the end), then the output's rounding
    tol = np.finfo(np.float32).eps * (k + 4) * bound
    tol = tol + np.abs(expected) * (dtype != "float32") * 2.0**-8
    err = np.abs(y.astype(np.float64) - expected)
    # the absolute slack is float32's rounding unit at the bottom of its range: the tiny
    # weight scales' outputs reach 1e-34, where a slack of 1e-30 hid a lost block
    assert np.all(err <= tol + k * 2.0**-149), (fmt, act, m, k, n, float(np.max(err - tol)))
    return y


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights_only", [False, True], ids=["w4a4", "w4a16"])
def test_matmul_is_fake_quant_x_times_dequant_w(emu, fmt, dtype, weights_only):
    rng = np.random.default_rng(3)
    act = None if weights_only else fmt
    # GEMV (m <= 256: 1, 2, 4 or 8 MMA tiles of 8 rows, two CTAs of 64 rows along m, K over
    # one or several steps of 128) and, for the two weight layouts (the emulated GEMM is
    # slow), the GEMM (m > 256: tiles of 128 in m and n)
    shapes = [(1, 100, 37, True), (5, 300, 9, False), (16, 33, 20, True), (17, 17, 5, False),
              (40, 100, 70, True), (70, 40, 20, False)]  # fmt: skip
    if fmt in ("amxfp4", "nvfp4") and dtype != "float16":
        shapes.append((260, 40, 129, True))
    for m, k, n, with_bias in shapes:
        _check_matmul(emu, fmt, act, dtype, m, k, n, rng, with_bias)


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # float16 would overflow
def test_matmul_with_tiny_and_huge_weight_scales(emu, fmt, dtype):
    rng = np.random.default_rng(11)
    for act in (fmt, None):
        # GEMV with 1, 2 and 8 MMA tiles of rows; the GEMM for the scales of widest range
        gemm = fmt == "amxfp4-e8m0" and dtype == "float32"
        for m in (3, 12, 40, 300) if gemm else (3, 12, 40):
            w = extreme_weights(rng, 24, 160)  # K: two steps of the GEMV's warps
            _check_matmul(emu, fmt, act, dtype, m, 160, 24, rng, False, w, 2.0**10)


@pytest.mark.parametrize("fmt", [*formats.names(), None])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [20, 1400])  # the warp- and thread-per-block kernels
def test_gemm_operand_planes_sum_exactly_to_the_activations(emu, fmt, dtype, rows):
    # the tensor cores are exact only if these bfloat16 planes add up to fake_quant(x)
    # (NVFP4: without its tensor scale g), or to x itself when X is not quantized
    code, np_type = DTYPES[dtype]
    planes = 1 if fmt is not None or dtype == "bfloat16" else (2 if dtype == "float16" else 3)
    k = 70
    x = (np.random.default_rng(4).standard_normal((rows, k)) * 3).astype(np_type)
    x[0, :8] = 0
    ld = 96  # K rounded up to 32
    out = np.zeros((planes, rows, ld), np.uint16)
    ws = np.zeros(64, np.uint32)
    _check(emu, emu.emu_gemm_operand(
        None if fmt is None else fmt.encode(), code, _ptr(x), I64(rows), I64(k), _ptr(out),
        planes, _ptr(ws),
    ))  # fmt: skip
    total = out.view(ml_dtypes.bfloat16).astype(np.float64).sum(axis=0)
    x32 = x.astype(np.float32)
    expected = x32 if fmt is None else formats.fake_quant(x32, fmt)
    if fmt is not None and formats.get(fmt).tensor_scale:
        expected = expected / formats.quantize(x32, fmt).tensor_scale  # g applied later
        np.testing.assert_allclose(total[:, :k], expected, rtol=2**-22)
    else:
        np.testing.assert_array_equal(total[:, :k], expected.astype(np.float64))
    assert not total[:, k:].any()  # the K padding is zero


@pytest.mark.parametrize("variant", GEMV_VARIANTS[1:])
@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemv_variants_give_the_baselines_bits(emu, variant, fmt, dtype):
    # the same products in the same order: within the bounds, and bit for bit the baseline's.
    # Shapes: m = 1 and 5 (fused, stream with one MMA tile), 12 (stream with two; fused runs
    # as the baseline), K not a multiple of 32, N not of 16, extreme weight scales, and once
    # K over 5 rounds of the stream ring (1024 values each: the ring wraps)
    shapes = [(1, 100, 37, None), (5, 300, 20, None), (12, 160, 24, "extreme")]
    if dtype == "float32" and fmt in ("amxfp4", "nvfp4") and "stream" in variant:
        shapes.append((3, 4200, 17, None))  # the two weight layouts (the emulation is slow)
    for act in (fmt, None):
        for m, k, n, weights in shapes if act else shapes[:3]:
            w = extreme_weights(np.random.default_rng(k), n, k) if weights else None
            x_scale = 2.0**10 if weights and dtype != "float16" else 1.0
            ys = []
            for v in ("baseline", variant):
                assert emu.amx_cuda_set_gemv_variant(v.encode()) == 0
                rng = np.random.default_rng(m * k)  # the same x, weights and bias for both
                if weights and dtype == "float16":  # float16 X would overflow: bits only
                    ys.append(_matmul_bits(emu, fmt, act, dtype, m, k, n, rng, w))
                else:
                    y = _check_matmul(emu, fmt, act, dtype, m, k, n, rng, m % 2 == 1, w, x_scale)
                    ys.append(y.view(f"u{y.itemsize}"))
            emu.amx_cuda_set_gemv_variant(b"baseline")
            np.testing.assert_array_equal(ys[1], ys[0], err_msg=f"{variant} {act} {m}x{k}x{n}")


def _matmul_bits(emu, fmt, act, dtype, m, k, n, rng, weights):
    code, np_type = DTYPES[dtype]
    x = rng.standard_normal((m, k)).astype(np_type)
    q = formats.quantize(weights, fmt)
    g = float(q.tensor_scale) if q.tensor_scale is not None else 1.0
    act_name = (act or "none").encode()
    ws = np.zeros(emu.amx_cuda_matmul_workspace(fmt.encode(), act_name, code, I64(m), I64(k))
                  // 4 + 1, np.uint32)  # fmt: skip
    y = np.zeros((m, n), np_type)
    _check(emu, emu.amx_cuda_matmul(
        fmt.encode(), act_name, code, _ptr(x), I64(m), I64(k),
        _ptr(np.ascontiguousarray(q.codes)), _ptr(np.ascontiguousarray(q.scales)),
        ctypes.c_float(g), I64(n), None, code, _ptr(y), _ptr(ws), None,
    ))  # fmt: skip
    return y.view(np.uint16)


@pytest.mark.parametrize("variant", GEMV_VARIANTS[1:])
def test_gemv_variants_keep_nan_and_inf_where_the_baseline_does(emu, variant):
    # edge-case activation rows (NaN, -Inf, huge, subnormal, ties) through the fused
    # quantization: the same output bits as the baseline's, NaN payloads included
    rng = np.random.default_rng(8)
    x = np.ascontiguousarray(_edge_rows("float32", 70)[[0, 4, 5, 6, 7, 8, 9, 10]])  # m <= 8
    w = formats.quantize(rng.standard_normal((20, 70)).astype(np.float32), "amxfp4")
    size = emu.amx_cuda_matmul_workspace(b"amxfp4", b"amxfp4", 0, I64(8), I64(70))
    ys = []
    for v in ("baseline", variant):
        emu.amx_cuda_set_gemv_variant(v.encode())
        y, ws = np.zeros((8, 20), np.float32), np.zeros(size // 4 + 1, np.uint32)
        _check(emu, emu.amx_cuda_matmul(
            b"amxfp4", b"amxfp4", 0, _ptr(x), I64(8), I64(70), _ptr(w.codes), _ptr(w.scales),
            ctypes.c_float(1.0), I64(20), None, 0, _ptr(y), _ptr(ws), None,
        ))  # fmt: skip
        ys.append(y.view(np.uint32))
    emu.amx_cuda_set_gemv_variant(b"baseline")
    assert np.isnan(ys[0].view(np.float32)).any()  # the rows hold what they are for
    np.testing.assert_array_equal(ys[1], ys[0])


def test_gemv_variant_is_chosen_by_name_or_environment(emu):
    assert emu.amx_cuda_gemv_variant() == b"baseline"
    assert emu.amx_cuda_set_gemv_variant(b"stream") == 0
    assert emu.amx_cuda_gemv_variant() == b"stream"
    assert emu.amx_cuda_set_gemv_variant(b"bogus") == 3  # AMX_ERR_ARGUMENT, nothing changes
    assert emu.amx_cuda_set_gemv_variant(None) == 3
    assert emu.amx_cuda_gemv_variant() == b"stream"
    emu.amx_cuda_set_gemv_variant(b"baseline")
    # AMX_CUDA_GEMV is the default of a new process; an unknown name is the baseline
    probe = "import ctypes, sys; f = ctypes.CDLL(sys.argv[1]).amx_cuda_gemv_variant; "
    probe += "f.restype = ctypes.c_char_p; print(f().decode())"
    for env, expected in (("stream-fused", "stream-fused"), ("bogus", "baseline")):
        env = {**os.environ, "AMX_CUDA_GEMV": env}
        command = [sys.executable, "-c", probe, str(emu.path)]
        out = subprocess.run(command, text=True, capture_output=True, env=env)
        assert out.stdout.strip() == expected, out.stderr
