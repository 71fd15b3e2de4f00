"""The TensorRT plugins' enqueue on a GPU: enqueue_shim.cc runs each plugin the way a
deserialized engine does, on torch CUDA tensors, and its outputs must equal the CUDA kernels'
called directly (the same kernels the onnxruntime CUDA op calls) bit for bit, and the
reference numerics within float32 accumulation error. Without a GPU only the shim's build is
checked; the rest skips with the reason."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from kernel_checks import expected_matmul
from trt_build import HERE, compile_source

from amx_export import formats
from amx_export.graph_passes.tensorrt_form import tensorrt_codes, tensorrt_scales
from amx_export.plugins.cuda import DTYPE_CODES, CudaKernels, DeviceWeights, unavailable_reason

GPU_REASON = unavailable_reason()


@pytest.fixture(scope="module")
def shim(compiler, tmp_path_factory):
    path = tmp_path_factory.mktemp("shim") / "libenqueue_shim.so"
    compile_source(compiler, HERE / "enqueue_shim.cc", path, "-shared", "-fPIC")
    return path


def test_the_shim_builds(shim):
    assert shim.exists()


@pytest.fixture(scope="module")
def gpu(shim, trt_library):
    if GPU_REASON is not None:
        pytest.skip(f"CUDA: {GPU_REASON}")
    lib = ctypes.CDLL(str(shim))
    lib.shim_last_error.restype = ctypes.c_char_p
    return lib, str(trt_library).encode(), CudaKernels()


def _check(lib, rc):
    assert rc == 0, lib.shim_last_error().decode()


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", list(DTYPE_CODES))
@pytest.mark.parametrize("m", [1, 40])  # GEMV and GEMM
def test_matmul_enqueue_equals_the_cuda_kernels(gpu, fmt, dtype, m):
    import torch

    lib, library, kernels = gpu
    rng = np.random.default_rng(m)
    k, n = 100, 70
    q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
    w = DeviceWeights.from_quantized(q, fmt, k)
    codes = torch.from_numpy(tensorrt_codes(np.asarray(q.codes))).cuda()
    scales = torch.from_numpy(tensorrt_scales(np.asarray(q.scales))).cuda()
    torch_type = getattr(torch, dtype)
    x = torch.randn((m, k)).to(torch_type).cuda()
    bias = torch.randn(n).to(torch_type).cuda()
    y = torch.empty((m, n), dtype=torch_type, device="cuda")
    ws = kernels.matmul_workspace(w, fmt, x)
    _check(lib, lib.shim_matmul(
        library, fmt.encode(), fmt.encode(), ctypes.c_int32(k), ctypes.c_float(w.tensor_scale),
        DTYPE_CODES[dtype], ctypes.c_int64(m), ctypes.c_int64(n),
        ctypes.c_int64(codes.shape[1]), ctypes.c_int64(scales.shape[0]),
        ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(codes.data_ptr()),
        ctypes.c_void_p(scales.data_ptr()), ctypes.c_void_p(bias.data_ptr()),
        ctypes.c_void_p(y.data_ptr()), ctypes.c_void_p(ws.data_ptr()), ctypes.c_size_t(ws.numel()),
        ctypes.c_void_p(torch.cuda.current_stream().cuda_stream),
    ))  # fmt: skip
    direct = kernels.matmul(x, w, fmt, bias)
    torch.cuda.synchronize()
    assert torch.equal(y, direct)
    expected, bound = expected_matmul(
        x.float().cpu().numpy(), q, fmt, fmt, k, bias.float().cpu().numpy()
    )
    tol = (
        np.finfo(np.float32).eps * (k + 4) * bound
        + np.abs(expected) * (dtype != "float32") * 2.0**-8
    )
    assert np.all(np.abs(y.float().cpu().numpy() - expected) <= tol + 1e-30)


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", list(DTYPE_CODES))
def test_quantize_enqueue_equals_the_cuda_kernels(gpu, fmt, dtype):
    import torch

    lib, library, kernels = gpu
    x = (torch.randn((3, 70)) * 4).to(getattr(torch, dtype)).cuda()
    y = torch.empty_like(x)
    ws = torch.empty(256, dtype=torch.uint8, device="cuda")
    _check(lib, lib.shim_quantize(
        library, fmt.encode(), DTYPE_CODES[dtype], ctypes.c_int64(3), ctypes.c_int64(70),
        ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()),
        ctypes.c_void_p(ws.data_ptr()), ctypes.c_size_t(256),
        ctypes.c_void_p(torch.cuda.current_stream().cuda_stream),
    ))  # fmt: skip
    torch.cuda.synchronize()
    assert torch.equal(y, kernels.fake_quant(x, fmt))
