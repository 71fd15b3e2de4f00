"""The CUDA kernels' source run on the host (tests/native/cuda_emulation/): each CUDA thread a
std::thread, WMMA emulated tile by tile, so machines without a GPU still check the quantize,
fake-quant, GEMV and tensor-core GEMM kernels' indexing and numerics, and the C ABI of api.cu,
against amx_export.formats. Not covered: speed, real device memory, the hardware's MMA.
tests/native/test_cuda_kernels.py covers those on a GPU."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from kernel_checks import edge_cases, expected_matmul

from amx_export import formats

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
    return lib


def _ptr(a: np.ndarray | None):
    return None if a is None else ctypes.c_void_p(a.ctypes.data)


def _check(lib, rc: int) -> None:
    assert rc == 0, lib.amx_cpu_error_string(rc).decode() + " " + lib.amx_cuda_last_error().decode()


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 17, 33, 100])
def test_quantize_and_fake_quant_bit_exact(emu, fmt, dtype, k):
    code, np_type = DTYPES[dtype]
    spec = formats.get(fmt)
    with np.errstate(over="ignore"):  # float16 turns the huge rows into +-Inf: also a case
        x = np.ascontiguousarray(edge_cases(np.random.default_rng(k), k).astype(np_type))
    x32 = x.astype(np.float32)
    rows, nb = x.shape[0], -(-k // spec.block_size)
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


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights_only", [False, True], ids=["w4a4", "w4a16"])
def test_matmul_is_fake_quant_x_times_dequant_w(emu, fmt, dtype, weights_only):
    code, np_type = DTYPES[dtype]
    rng = np.random.default_rng(3)
    act = None if weights_only else fmt
    # GEMV (m <= 16) and the tensor-core GEMM, one and two tiles of 128 in m and n
    shapes = [(1, 100, 37, True), (5, 64, 9, False), (16, 33, 20, True), (17, 17, 5, False),
              (40, 100, 70, True), (130, 64, 129, False)]  # fmt: skip
    for m, k, n, with_bias in shapes:
        x = rng.standard_normal((m, k)).astype(np.float32)
        x[:, ::29] *= 40
        x = x.astype(np_type)
        q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
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
        # float32 accumulation (NVFP4's g applied once in the GEMM), then the output's rounding
        tol = np.finfo(np.float32).eps * (k + 4) * bound
        tol = tol + np.abs(expected) * (dtype != "float32") * 2.0**-8
        err = np.abs(y.astype(np.float64) - expected)
        assert np.all(err <= tol + 1e-30), (m, k, n, float(np.max(err - tol)))


@pytest.mark.parametrize("fmt", [*formats.names(), None])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_operand_planes_sum_exactly_to_the_activations(emu, fmt, dtype):
    # the tensor-core GEMM is exact only if these bfloat16 planes add up to fake_quant(x)
    # (NVFP4: without its tensor scale g), or to x itself when X is not quantized
    code, np_type = DTYPES[dtype]
    planes = 1 if fmt is not None or dtype == "bfloat16" else (2 if dtype == "float16" else 3)
    k, rows = 70, 20
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
