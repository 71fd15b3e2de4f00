"""The custom ops on onnxruntime's intra-op thread pool: the same bits with 1, 2 or 3 threads
and in either execution mode, on every kernel path (threads_child.py runs the sessions in a
fresh process per instruction set), bit for bit what the C ABI gives (itself held to
amx_export.formats in test_cpu_kernels.py); no thread of our own, ever, and the pool's
threads do part of the work."""

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes  # noqa: F401 - registers bfloat16 with numpy (formats needs it)
import numpy as np
import pytest
from kernel_checks import expected_matmul, selected_isa
from onnx import TensorProto, helper, numpy_helper, save

from amx_export import formats

CHILD = Path(__file__).with_name("threads_child.py")
# K not a multiple of 32, N not one of 16; large enough that every loop splits into tasks
K, N = 1100, 1000
ROWS = (1, 3, 16, 64)  # VNNI GEMV rows 1 / 3 / 16 / 16x4; unpacked integer path below 8
# (name, weight format, activation format, X type, bias)
MATMULS = [
    ("w4a4", "amxfp4", "amxfp4", np.float32, True),  # packed VNNI; integer / panel path
    ("weights_only", "mxfp4", "none", np.float32, False),  # float panel path
    ("nvfp4", "nvfp4", "nvfp4", np.float32, False),  # tensor scales: a parallel maximum
    ("w4a4_f16", "amxfp4-e4m3", "amxfp4-e4m3", np.float16, False),
]
QUANTIZE = ("quantize_f16", "mxfp4", np.float16)
ONNX_TYPE = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def _weights(rng, fmt):
    return formats.quantize(rng.standard_normal((N, K)).astype(np.float32), fmt)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """One model with every op, its feeds for each M and what went into it."""
    rng = np.random.default_rng(14)
    nodes, inputs, outputs, inits, weights = [], [], [], [], {}
    for name, wf, act, dtype, with_bias in MATMULS:
        q = _weights(rng, wf)
        bias = rng.standard_normal(N).astype(np.float32) if with_bias else None
        weights[name] = (q, bias)
        inits += [numpy_helper.from_array(np.asarray(q.codes), f"{name}.codes"),
                  numpy_helper.from_array(np.asarray(q.scales), f"{name}.scales")]  # fmt: skip
        args = [f"x_{name}", f"{name}.codes", f"{name}.scales"]
        if bias is not None:
            inits.append(numpy_helper.from_array(bias, f"{name}.bias"))
            args.append(f"{name}.bias")
        attrs = {"weight_format": wf, "act_format": act, "in_features": K}
        if q.tensor_scale is not None:
            attrs["weight_tensor_scale"] = float(q.tensor_scale)
        nodes.append(helper.make_node("MatMul", args, [f"y_{name}"], domain="amx", **attrs))
        inputs.append(helper.make_tensor_value_info(f"x_{name}", ONNX_TYPE[dtype], ["m", K]))
        outputs.append(helper.make_tensor_value_info(f"y_{name}", ONNX_TYPE[dtype], ["m", N]))
    name, fmt, dtype = QUANTIZE
    nodes.append(
        helper.make_node("Quantize", [f"x_{name}"], [f"y_{name}"], domain="amx", format=fmt)
    )
    inputs.append(helper.make_tensor_value_info(f"x_{name}", ONNX_TYPE[dtype], ["m", K]))
    outputs.append(helper.make_tensor_value_info(f"y_{name}", ONNX_TYPE[dtype], ["m", K]))
    graph = helper.make_graph(nodes, "threads", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("amx", 1)]
    folder = tmp_path_factory.mktemp("threads")
    save(helper.make_model(graph, opset_imports=opsets, ir_version=9), folder / "model.onnx")
    dtypes = {f"x_{n}": d for n, _, _, d, _ in MATMULS} | {f"x_{QUANTIZE[0]}": QUANTIZE[2]}
    feeds = {f"m{m}/{x}": (rng.standard_normal((m, K)) * 3).astype(d)
             for m in ROWS for x, d in dtypes.items()}  # fmt: skip
    np.savez(folder / "feeds.npz", **feeds)
    return folder, feeds, weights


def _run_child(ort_library, folder: Path, isa: str, repeat: int) -> tuple[dict, dict]:
    spec = {"library": str(ort_library), "model": str(folder / "model.onnx"),
            "feeds": str(folder / "feeds.npz"), "output": str(folder / f"{isa}.npz"),
            "repeat": repeat}  # fmt: skip
    env = {"AMX_CPU_ISA": isa} if isa != "avx512-vnni" else {}
    # an OpenMP team (the old kernels had one) would have 3 threads even on a 1-core runner
    env["OMP_NUM_THREADS"] = "3"
    result = subprocess.run([sys.executable, str(CHILD), json.dumps(spec)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, **env})  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(folder / f"{isa}.npz") as data:
        return json.loads(result.stdout), dict(data)


@pytest.mark.parametrize("isa", ["avx512-vnni", "avx-vnni", "avx2", "portable"])
def test_outputs_are_the_same_on_any_threads(ort_library, kernels, case, isa):
    folder, feeds, weights = case
    with selected_isa(kernels, isa):  # skips where the CPU lacks it
        report, outputs = _run_child(ort_library, folder, isa, repeat=1)
        assert report["isa"] == isa
        for m in ROWS:
            for name, wf, act, dtype, _ in MATMULS:
                q, bias = weights[name]
                x = feeds[f"m{m}/x_{name}"]
                x32 = x.astype(np.float32)
                want = kernels.matmul_packed(x32, q, wf, None if act == "none" else act, bias)
                exact, bound = expected_matmul(x32, q, wf, None if act == "none" else act, K,
                                               bias)  # fmt: skip
                eps = np.finfo(np.float32).eps
                assert np.all(np.abs(want - exact) <= eps * K * bound), (name, m)
                for key in _keys(outputs, m, f"y_{name}"):
                    np.testing.assert_array_equal(outputs[key], want.astype(dtype), err_msg=key)
            name, fmt, _ = QUANTIZE
            want = formats.fake_quant(feeds[f"m{m}/x_{name}"], fmt)
            for key in _keys(outputs, m, f"y_{name}"):
                np.testing.assert_array_equal(outputs[key], want, err_msg=key)


def _keys(outputs, m, output) -> list[str]:
    keys = [k for k in outputs if k.endswith(f"/m{m}/{output}")]
    assert len(keys) == 6, keys  # 1, 2, 3 threads x sequential, parallel
    return keys


def test_no_threads_of_our_own_and_the_pool_does_work(ort_library, case):
    """Fails on kernels with an OpenMP team: libgomp is mapped, its threads appear during the
    first run and outlive every session, and onnxruntime's pool stays idle."""
    folder, _, _ = case
    report, _ = _run_child(ort_library, folder, "avx512-vnni", repeat=4)
    assert not report["gomp"]
    assert report["leftover"] == 0
    for session in report["sessions"]:
        assert session["during"] == 0, session
        if session["threads"] == 1 and session["mode"] == "sequential":
            assert session["created"] == 0, session  # one thread: the caller's, only
        if session["threads"] == 3 and session["mode"] == "sequential":
            assert session["created"] == 2, session
            assert session["pool_cpu_ms"] > 1.0, session  # ~100 ms of work to share
