"""libamx_ort.so in onnxruntime: amx.Quantize and amx.MatMul nodes against
amx_export.formats, and whole models against their emulation."""

import contextlib
import io

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from amx_export import formats

DTYPES = {
    "float32": (np.float32, TensorProto.FLOAT),
    "float16": (np.float16, TensorProto.FLOAT16),
    "bfloat16": (ml_dtypes.bfloat16, TensorProto.BFLOAT16),
}


CUDA_EP = "CUDAExecutionProvider"
needs_cuda_ep = pytest.mark.skipif(
    CUDA_EP not in ort.get_available_providers(),
    reason="this onnxruntime has no CUDA execution provider (pip's onnxruntime is CPU-only; "
    "onnxruntime-gpu and a GPU run these)",
)


def _session(model: onnx.ModelProto, library, cuda=False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(library))
    if not cuda:
        return ort.InferenceSession(model.SerializeToString(), options)
    # every node on the GPU: a custom op without a CUDA kernel would fail here, not fall back
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return ort.InferenceSession(model.SerializeToString(), options, providers=[CUDA_EP])


def _model(nodes, inputs, outputs, initializers=()):
    """A model of ``nodes`` reading "x" and writing "y"; a bfloat16 x and y are float32 at
    the graph boundary (Casts around the nodes), since onnxruntime's Python API has no
    bfloat16 arrays."""
    x_type, y_type = inputs[0].type.tensor_type, outputs[0].type.tensor_type
    if x_type.elem_type == TensorProto.BFLOAT16:
        nodes = [
            helper.make_node("Cast", ["x32"], ["x"], to=TensorProto.BFLOAT16),
            *nodes,
            helper.make_node("Cast", ["y"], ["y32"], to=TensorProto.FLOAT),
        ]
        x_type.elem_type = y_type.elem_type = TensorProto.FLOAT
        inputs[0].name, outputs[0].name = "x32", "y32"
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("amx", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=9)


def _run(session, x):
    name = session.get_inputs()[0].name
    return session.run(None, {name: x.astype(np.float32) if name == "x32" else x})


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "cuda", [False, pytest.param(True, marks=needs_cuda_ep)], ids=["cpu", "cuda"]
)
def test_quantize_op_equals_formats(ort_library, fmt, dtype, cuda):
    np_type, onnx_type = DTYPES[dtype]
    node = helper.make_node("Quantize", ["x"], ["y"], domain="amx", format=fmt)
    model = _model(
        [node],
        [helper.make_tensor_value_info("x", onnx_type, [None, None, 70])],
        [helper.make_tensor_value_info("y", onnx_type, [None, None, 70])],
    )
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 70)) * 4).astype(np_type)
    x[0, 0, :5] = 0
    (y,) = _run(_session(model, ort_library, cuda), x)
    expected = formats.fake_quant(x, fmt)
    np.testing.assert_array_equal(y.astype(np.float32), expected.astype(np.float32))


def _matmul_model(fmt, act, onnx_type, k, n, rng, with_bias):
    q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
    inits = [
        numpy_helper.from_array(np.asarray(q.codes), "codes"),
        numpy_helper.from_array(np.asarray(q.scales), "scales"),
    ]
    inputs = ["x", "codes", "scales"]
    bias = None
    if with_bias:
        bias = rng.standard_normal(n).astype(np.float32)
        inits.append(numpy_helper.from_array(bias, "bias"))
        inputs.append("bias")
    attrs = {"weight_format": fmt, "act_format": act, "in_features": k}
    if q.tensor_scale is not None:
        attrs["weight_tensor_scale"] = float(q.tensor_scale)
    node = helper.make_node("MatMul", inputs, ["y"], domain="amx", name="layer0", **attrs)
    model = _model(
        [node],
        [helper.make_tensor_value_info("x", onnx_type, [None, None, k])],
        [helper.make_tensor_value_info("y", onnx_type, [None, None, n])],
        inits,
    )
    return model, q, bias


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["same", "none"])
@pytest.mark.parametrize(
    "cuda", [False, pytest.param(True, marks=needs_cuda_ep)], ids=["cpu", "cuda"]
)
def test_matmul_op_equals_fake_quant_matmul(ort_library, fmt, dtype, act, cuda):
    np_type, onnx_type = DTYPES[dtype]
    rng = np.random.default_rng(1)
    k, n = 100, 24
    act_format = fmt if act == "same" else "none"
    model, q, bias = _matmul_model(fmt, act_format, onnx_type, k, n, rng, with_bias=True)
    session = _session(model, ort_library, cuda)
    for m in (1, 7, 40):  # CPU: integer path, its edge, float panel; CUDA: GEMV, GEMV, GEMM
        x = rng.standard_normal((2, m, k)).astype(np_type)
        (y,) = _run(session, x)
        x32 = x.astype(np.float32)
        xq = formats.fake_quant(x32, act_format) if act == "same" else x32
        w = formats.dequantize(q, fmt, k=k).astype(np.float64)
        expected = xq.astype(np.float64) @ w.T + bias
        assert y.shape == (2, m, n)
        # float32 accumulation, then the output dtype's own rounding
        tol = np.finfo(np.float32).eps * k * (np.abs(xq) @ np.abs(w).T)
        tol = tol + np.abs(expected) * (0 if dtype == "float32" else 2.0**-8)
        assert np.all(np.abs(y.astype(np.float64) - expected) <= tol + 1e-30)


def test_matmul_op_rejects_weights_that_do_not_match(ort_library):
    rng = np.random.default_rng(2)
    model, _, _ = _matmul_model("amxfp4", "amxfp4", TensorProto.FLOAT, 64, 8, rng, False)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "k"  # K unknown statically
    session = _session(model, ort_library)
    with pytest.raises(Exception, match="layer0.*in_features=64"):
        session.run(None, {"x": np.ones((1, 2, 32), np.float32)})


def test_unknown_format_attribute_is_refused_at_load(ort_library):
    rng = np.random.default_rng(2)
    model, _, _ = _matmul_model("amxfp4", "amxfp4", TensorProto.FLOAT, 64, 8, rng, False)
    (act,) = [a for a in model.graph.node[0].attribute if a.name == "act_format"]
    act.s = b"int3"
    with pytest.raises(Exception, match='act_format="int3" is not a known format'):
        _session(model, ort_library).run(None, {"x": np.ones((1, 2, 64), np.float32)})


@pytest.fixture(scope="module")
def tiny_onnx(tiny_export):
    return tiny_export("llama")[1]  # the KV-cache decoder, shared with the export tests


@pytest.mark.parametrize("fmt", formats.names())
def test_custom_op_model_equals_emulated_model(ort_library, tiny_onnx, tmp_path, fmt):
    from amx_export.cli import main
    from amx_export.decoder_io import describe, full_pass_feeds
    from amx_export.ort import EMULATED, NATIVE, session

    path = tmp_path / "tiny.amx.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([str(tiny_onnx), "--attention", "--format", fmt, "-o", str(path)]) == 0
    native, how = session(path, native=True)
    emulated, how_emulated = session(path, native=False)
    assert (how, how_emulated) == (NATIVE, EMULATED)
    ids = np.random.default_rng(0).integers(0, 256, (2, 45)).astype(np.int64)
    a = native.run(["logits"], full_pass_feeds(describe(native), ids))[0]
    b = emulated.run(["logits"], full_pass_feeds(describe(emulated), ids))[0]
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


# ---- the TensorRT form: int32 words holding the same bytes (graph_passes/contract.py) ----------


def _tensorrt_form(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_ir as ir

    from amx_export.graph_passes.tensorrt_form import TensorRTFormPass

    converted = ir.from_proto(model)
    assert TensorRTFormPass()(converted).modified
    return ir.to_proto(converted)


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize(
    "cuda", [False, pytest.param(True, marks=needs_cuda_ep)], ids=["cpu", "cuda"]
)
def test_matmul_op_takes_the_tensorrt_form(ort_library, fmt, cuda):
    """int32 Wcodes/Wscales and the plugin_* attributes: the same output, bit for bit."""
    rng = np.random.default_rng(3)
    model, _, _ = _matmul_model(fmt, fmt, TensorProto.FLOAT, 70, 37, rng, with_bias=True)
    trt = _tensorrt_form(model)
    assert {i.data_type for i in trt.graph.initializer[:2]} == {TensorProto.INT32}
    assert {a.name for a in trt.graph.node[0].attribute} >= {"plugin_namespace", "plugin_version"}
    x = rng.standard_normal((2, 5, 70)).astype(np.float32)
    (expected,) = _run(_session(model, ort_library, cuda), x)
    (y,) = _run(_session(trt, ort_library, cuda), x)
    np.testing.assert_array_equal(y, expected)


def _with_initializer(model, name, array):
    (old,) = [t for t in model.graph.initializer if t.name == name]
    old.CopyFrom(numpy_helper.from_array(array, name))
    return model


def test_matmul_op_rejects_int32_scales_of_the_wrong_length(ort_library):
    rng = np.random.default_rng(4)
    model, _, _ = _matmul_model("amxfp4", "amxfp4", TensorProto.FLOAT, 64, 8, rng, False)
    trt = _tensorrt_form(model)  # N*nb*S = 8*2*2 bytes = 8 words
    _with_initializer(trt, "scales", np.zeros(9, np.int32))
    with pytest.raises(Exception, match=r"amx.MatMul layer0: int32 Wscales must be 1-D .* = \[8\]"):
        _run(_session(trt, ort_library), np.ones((1, 2, 64), np.float32))


def test_matmul_op_rejects_other_weight_types(ort_library):
    rng = np.random.default_rng(4)
    model, q, _ = _matmul_model("amxfp4", "amxfp4", TensorProto.FLOAT, 64, 8, rng, False)
    _with_initializer(model, "codes", np.asarray(q.codes).view(np.int8))
    with pytest.raises(Exception, match="amx.MatMul layer0: Wcodes must be uint8 or int32"):
        _run(_session(model, ort_library), np.ones((1, 2, 64), np.float32))


@pytest.mark.parametrize("fmt", ["amxfp4", "nvfp4"])
def test_tensorrt_form_model_equals_onnxruntime_form(ort_library, tiny_onnx, tmp_path, fmt):
    from amx_export.cli import main
    from amx_export.decoder_io import describe, full_pass_feeds
    from amx_export.ort import NATIVE, session

    outputs = []
    for target in ("onnxruntime", "tensorrt"):
        path = tmp_path / f"tiny.{target}.onnx"
        args = [str(tiny_onnx), "--attention", "--format", fmt, "--target", target]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*args, "-o", str(path)]) == 0
        metadata = {p.key: p.value for p in onnx.load(path).metadata_props}
        assert metadata.get("amx_export.target", "onnxruntime") == target
        sess, how = session(path, native=True)
        assert how == NATIVE
        ids = np.random.default_rng(0).integers(0, 256, (2, 45)).astype(np.int64)
        outputs.append(sess.run(["logits"], full_pass_feeds(describe(sess), ids))[0])
    np.testing.assert_array_equal(outputs[1], outputs[0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("act", ["same", "none"])
@pytest.mark.parametrize("fmt", formats.names())
def test_half_precision_model_custom_ops_equal_emulation(ort_library, fmt, act, dtype):
    """Float16 / bfloat16 neighbours that onnxruntime runs in float32 (tiny_models): the
    custom ops and the emulation round the same way at the default level: bit for bit, but
    for NVFP4 activations (float32 sum order, within one step of the dtype)."""
    import onnx_ir as ir
    import tiny_models

    from amx_export.ort import EMULATED, NATIVE, model_session

    act_format = fmt if act == "same" else "none"
    proto, feeds, want = tiny_models.half_precision_matmul(fmt, act_format, dtype)
    native, how = model_session(ir.from_proto(proto), "native", native=True)
    emulated, how_emulated = model_session(ir.from_proto(proto), "emulated", native=False)
    assert (how, how_emulated) == (NATIVE, EMULATED)
    # NVFP4 activations (g off the grid): the float32 sum order shows, within one dtype step
    rtol = {"float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype] if act_format == "nvfp4" else 0
    for session in (native, emulated):
        for got, expected in zip(session.run(None, feeds), want, strict=True):
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=0)
