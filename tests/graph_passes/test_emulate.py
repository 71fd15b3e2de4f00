"""EmulatePass: amx nodes lowered to standard ONNX ops, bit-exact with amx_export.formats.

Every emulated model is checked the same way (``emulate``): the pass reports a change, no
amx node or opset import is left, onnx.checker accepts the model and a second run changes
nothing. Outputs come from stock onnxruntime (CPU, no custom op library).
"""

import functools
import re

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import tiny_models
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from amx_export import formats
from amx_export.graph_passes.emulate import EmulatePass
from amx_export.graph_passes.pipeline import Options, rewrite

FORMATS = formats.names()
KS = (1, 31, 32, 33, 100)
ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


# ---- helpers -------------------------------------------------------------------------------


def make_model(nodes, inputs, outputs, initializers=(), opset=21):
    graph = helper.make_graph(nodes, "emulate_test", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("amx", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model


def quantize_node(x, y, fmt, name="q"):
    return helper.make_node("Quantize", [x], [y], domain="amx", name=name, format=fmt)


def all_nodes(graph):
    """Nodes of a GraphProto and of its subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)


def emulate(proto: onnx.ModelProto) -> onnx.ModelProto:
    """EmulatePass on a copy of ``proto``, with the checks every emulated model must pass."""
    model = ir.from_proto(proto)
    lowering = EmulatePass()
    assert lowering(model).modified
    amx = [n.name for n in all_nodes(proto.graph) if n.domain == "amx"]
    assert lowering.lowered == amx
    out = ir.to_proto(model)
    assert all(n.domain == "" for n in all_nodes(out.graph))
    assert "amx" not in {o.domain for o in out.opset_import}
    onnx.checker.check_model(out, full_check=True)  # full: strict type and shape inference
    assert not EmulatePass()(model).modified  # a second run finds nothing to do
    assert ir.to_proto(model).SerializeToString() == out.SerializeToString()
    return out


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def assert_same_bits(got: np.ndarray, want: np.ndarray, case: str = ""):
    """Equal bit for bit (-0.0 is not 0.0), NaN wherever ``want`` is NaN."""
    assert got.dtype == want.dtype and got.shape == want.shape, case
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{case}: NaN positions differ"
    uint = np.uint16 if want.itemsize == 2 else np.uint32
    differ = got.view(uint) != want.view(uint)
    differ &= ~nan
    where = np.argwhere(differ)[:5]
    assert not differ.any(), (
        f"{case}: {differ.sum()} values differ, e.g. at {where.tolist()}: "
        f"got {got[tuple(where.T)]}, want {want[tuple(where.T)]}"
    )


# ---- inputs --------------------------------------------------------------------------------


def _tie_blocks(rng, shape, bs):
    """E2M1 ties on a power-of-two scale S: block extremes ±6S, elements t*S at midpoints."""
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.5, 1.0, 3.0, 6.0])
    scale = np.exp2(rng.integers(-10, 10, (*shape[:-1], 1)))
    x = rng.choice(ties, shape) * rng.choice([-1.0, 1.0], shape) * scale
    column = np.arange(shape[-1]) % bs
    x = np.where(column == 0, 6 * scale, np.where(column == 1, -6 * scale, x))
    return x


def _scale_tie_blocks(rng, spec, shape, dtype):
    """Block extremes whose scale input s lands exactly on a rounding edge of the scale format.

    For NVFP4 one element 2688 makes g = 1, so that s = m / 6 stays exact.
    """
    edges = spec.scale_edges.astype(np.float64)
    m = edges * 6 if spec.rule == "minifloat" else edges
    info = np.finfo(dtype)
    m = m[(m >= info.tiny) & (m <= info.max / 2)]
    bs = spec.block_size
    x = rng.uniform(-1, 1, shape) * rng.choice(m, (*shape[:-1], 1)) / 8
    column = np.arange(shape[-1]) % bs
    x = np.where(column == 0, rng.choice(m, shape), x)
    x = np.where(column == 1, -rng.choice(m, shape), x)
    if spec.tensor_scale:
        x.reshape(-1)[0] = 2688.0
    return x


def adversarial_inputs(rng, spec, k, dtype):
    """Named arrays [..., k] of ``dtype`` (ranks 1 to 4) that hit FORMAT.md's corner cases."""
    info = np.finfo(dtype)
    lo_exp, hi_exp = int(np.log2(info.smallest_subnormal)), int(np.log2(info.max)) - 3
    normal = rng.standard_normal((2, 3, k))
    cases = {
        "normal_1d": rng.standard_normal(k),
        "normal_4d": rng.standard_normal((2, 1, 2, k)),
        "wide_exponents": normal * np.exp2(rng.integers(lo_exp + 4, hi_exp, (2, 3, 1))),
        "mixed_exponents": normal * np.exp2(rng.integers(lo_exp + 4, hi_exp, (2, 3, k))),
        "zeros": np.zeros((2, k)),
        "negative_zeros": np.full((2, k), -0.0),
        "signed_zeros_and_one": np.where(rng.random((2, k)) < 0.5, -0.0, 0.0)
        + (np.arange(k) == k - 1),
        "positive": np.abs(normal),
        "negative": -np.abs(normal),
        "ties": _tie_blocks(rng, (3, k), spec.block_size),
        "scale_ties": _scale_tie_blocks(rng, spec, (4, k), dtype),
        "subnormal": rng.integers(-3, 4, (2, k)) * info.smallest_subnormal * 2.0,
        "tiny": normal * info.tiny,
        "huge": rng.choice([-1.0, 1.0], (2, 3, k)) * info.max * rng.uniform(0.5, 1, (2, 3, k)),
        "huge_and_small": np.where(np.arange(k) % 7 == 0, info.max * 0.99, normal),
        "empty": np.zeros((0, k)),
    }
    nonfinite = normal.copy().reshape(-1)
    for value in (np.nan, np.inf, -np.inf):
        nonfinite[rng.integers(0, nonfinite.size)] = value
    cases["nan_inf"] = nonfinite.reshape(normal.shape)
    with np.errstate(over="ignore"):
        return {name: np.asarray(x).astype(dtype) for name, x in cases.items()}


# ---- amx.Quantize ---------------------------------------------------------------------------


def reshaped_quantize_model(fmt, dtype):
    """amx.Quantize on X = Reshape(flat, shape): rank, K and even X's dtype unknown statically."""
    elem = ONNX_TYPES[dtype]
    nodes = [
        helper.make_node("Reshape", ["flat", "shape"], ["x"], name="to_x"),
        quantize_node("x", "y", fmt),
        helper.make_node("Reshape", ["y", "minus_one"], ["y_flat"], name="flatten"),
    ]
    inputs = [
        helper.make_tensor_value_info("flat", elem, ["n"]),
        helper.make_tensor_value_info("shape", TensorProto.INT64, ["rank"]),
    ]
    outputs = [helper.make_tensor_value_info("y_flat", elem, ["n"])]
    minus_one = numpy_helper.from_array(np.array([-1], np.int64), "minus_one")
    return make_model(nodes, inputs, outputs, [minus_one])


def run_reshaped(run, x):
    (y,) = run.run(None, {"flat": x.reshape(-1), "shape": np.array(x.shape, np.int64)})
    return y.reshape(x.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_bit_exact_any_rank_and_dynamic_k(fmt, dtype, rng):
    """The run-time path: K from Shape, any rank, a CastLike back to X's dtype."""
    run = session(emulate(reshaped_quantize_model(fmt, dtype)))
    spec = formats.get(fmt)
    for k in KS:
        for name, x in adversarial_inputs(rng, spec, k, dtype).items():
            assert_same_bits(run_reshaped(run, x), formats.fake_quant(x, fmt), f"K={k} {name}")


@functools.cache
def reshaped_session(fmt):
    return session(emulate(reshaped_quantize_model(fmt, np.float32)))


FLOAT32_ARRAYS = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, max_side=40),
    elements=st.floats(width=32),  # NaN, ±Inf, subnormals and -0.0 included
)
RAW_BITS = hnp.arrays(np.uint32, hnp.array_shapes(min_dims=1, max_dims=2, max_side=70)).map(
    lambda bits: bits.view(np.float32)
)


@settings(max_examples=150, deadline=None)
@given(fmt=st.sampled_from(FORMATS), x=st.one_of(FLOAT32_ARRAYS, RAW_BITS))
def test_quantize_bit_exact_property(fmt, x):
    assert_same_bits(run_reshaped(reshaped_session(fmt), x), formats.fake_quant(x, fmt))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_static_shapes_share_tables(fmt, dtype, rng):
    """Static shapes and dtype (constant pads, Clip + Cast); two nodes, one set of tables."""
    shapes = {"a": [4, 33], "b": [2, 3, 64]}
    nodes = [quantize_node(f"x_{n}", f"y_{n}", fmt, name=f"q_{n}") for n in shapes]
    elem = ONNX_TYPES[dtype]
    inputs = [helper.make_tensor_value_info(f"x_{n}", elem, s) for n, s in shapes.items()]
    outputs = [helper.make_tensor_value_info(f"y_{n}", elem, s) for n, s in shapes.items()]
    out = emulate(make_model(nodes, inputs, outputs))
    tables = [t.name for t in out.graph.initializer if t.name.startswith("amx_emul/e2m1")]
    assert sorted(tables) == ["amx_emul/e2m1_midpoints", "amx_emul/e2m1_values"]
    assert all(n.name.startswith(("q_a/emul/", "q_b/emul/")) for n in out.graph.node)
    run = session(out)
    spec = formats.get(fmt)
    for case in ("normal_1d", "ties", "scale_ties", "huge", "nan_inf"):
        feeds = {}
        for n, shape in shapes.items():
            x = adversarial_inputs(rng, spec, shape[-1], dtype)[case]
            feeds[f"x_{n}"] = np.resize(x, shape)
        for (n, x), y in zip(feeds.items(), run.run(None, feeds), strict=True):
            assert_same_bits(y, formats.fake_quant(x, fmt), f"{n} {case}")


def test_bfloat16_through_casts_with_unknown_types(rng):
    """bfloat16 X behind a Cast, its dtype unknown to the pass (no value_info): CastLike."""
    nodes = [
        helper.make_node("Cast", ["x"], ["x_bf16"], to=TensorProto.BFLOAT16, name="to_bf16"),
        quantize_node("x_bf16", "y_bf16", "amxfp4"),
        helper.make_node("Cast", ["y_bf16"], ["y"], to=TensorProto.FLOAT, name="to_f32"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", 40])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 40])]
    run = session(emulate(make_model(nodes, inputs, outputs)))
    for x in adversarial_inputs(rng, formats.get("amxfp4"), 40, np.float32).values():
        if x.ndim != 2:
            continue
        x = x.astype(ml_dtypes.bfloat16).astype(np.float32)  # what the graph's Cast does
        (y,) = run.run(None, {"x": x})
        want = formats.fake_quant(x.astype(ml_dtypes.bfloat16), "amxfp4").astype(np.float32)
        assert_same_bits(y, want)


def test_quantize_inside_if_branch(rng):
    """amx nodes in subgraphs are lowered too; the tables stay in the main graph."""
    then_graph = helper.make_graph(
        [quantize_node("x", "y_then", "mxfp4", name="branch_q")],
        "then_branch",
        [],
        [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, ["m", 33])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y_else"], name="keep")],
        "else_branch",
        [],
        [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, ["m", 33])],
    )
    node = helper.make_node(
        "If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph, name="if"
    )
    inputs = [
        helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", 33]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 33])]
    out = emulate(make_model([node], inputs, outputs))
    assert any(t.name == "amx_emul/e2m1_values" for t in out.graph.initializer)
    run = session(out)
    x = rng.standard_normal((3, 33)).astype(np.float32)
    assert_same_bits(
        run.run(None, {"cond": np.array(True), "x": x})[0], formats.fake_quant(x, "mxfp4")
    )
    assert_same_bits(run.run(None, {"cond": np.array(False), "x": x})[0], x)


def test_duplicate_and_missing_node_names_get_unique_prefixes(rng):
    nodes = [
        quantize_node("x", "y1", "amxfp4", name="same"),
        quantize_node("y1", "y2", "nvfp4", name="same"),
        quantize_node("y2", "y3", "mxfp4", name=""),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 40])]
    outputs = [helper.make_tensor_value_info("y3", TensorProto.FLOAT, [2, 40])]
    out = emulate(make_model(nodes, inputs, outputs))  # the checker rejects repeated names
    prefixes = {re.match(r"(.*/emul[^/]*)/", n.name).group(1) for n in out.graph.node}
    assert prefixes == {"same/emul", "same/emul_1", "amx_quantize_2/emul"}
    x = rng.standard_normal((2, 40)).astype(np.float32)
    want = formats.fake_quant(formats.fake_quant(formats.fake_quant(x, "amxfp4"), "nvfp4"), "mxfp4")
    assert_same_bits(session(out).run(None, {"x": x})[0], want)


# ---- amx.MatMul -----------------------------------------------------------------------------


def _weights(rng, n, k):
    """[N, K] weights: rows of very different magnitudes, a zero row and a one-signed row."""
    w = rng.standard_normal((n, k)) * np.exp2(rng.integers(-20, 20, (n, 1)))
    w[1] = 0.0
    w[2] = np.abs(w[2])
    return w.astype(np.float32)


def matmul_model(fmt, k, n, dtype=np.float32, rng=None):
    """Two amx.MatMul on one X [b, s, K] and one packed weight: W4A4 with bias, and W4A16."""
    w = _weights(rng, n, k)
    q = formats.quantize(w, fmt)
    bias = rng.standard_normal(n).astype(dtype)
    inits = [
        numpy_helper.from_array(q.codes, "w.codes"),
        numpy_helper.from_array(q.scales, "w.scales"),
        numpy_helper.from_array(bias, "bias"),
    ]
    attrs = {"weight_format": fmt, "in_features": k}
    if q.tensor_scale is not None:
        attrs["weight_tensor_scale"] = float(q.tensor_scale)
    nodes = [
        helper.make_node(
            "MatMul",
            ["x", "w.codes", "w.scales", "bias"],
            ["y_w4a4"],
            domain="amx",
            name="fc",
            act_format=fmt,
            **attrs,
        ),
        helper.make_node(
            "MatMul",
            ["x", "w.codes", "w.scales"],
            ["y_w4"],
            domain="amx",
            name="fc_weight_only",
            act_format="none",
            **attrs,
        ),
    ]
    elem = ONNX_TYPES[dtype]
    inputs = [helper.make_tensor_value_info("x", elem, ["b", "s", k])]
    outputs = [helper.make_tensor_value_info(y, elem, ["b", "s", n]) for y in ("y_w4a4", "y_w4")]
    return make_model(nodes, inputs, outputs, inits), formats.dequantize(q, fmt, k=k), bias


def assert_matmul_close(got, xq, w, bias=None):
    """Within float32 rounding of the exact xq @ wᵀ + bias (bounded by K eps sum |terms|)."""
    xq, w = xq.astype(np.float64), w.astype(np.float64)
    bias = np.zeros(w.shape[0]) if bias is None else bias.astype(np.float64)
    want = xq @ w.T + bias
    bound = 1e-5 * (np.abs(xq) @ np.abs(w).T + np.abs(bias)) + 1e-30
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.all(np.abs(got - want) <= bound), np.max(np.abs(got - want) / bound)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_matmul_matches_numpy(fmt, k, rng):
    proto, w, bias = matmul_model(fmt, k, n=6, rng=rng)
    out = emulate(proto)
    # the weights stay 4-bit in the file: no float copy of them is added
    added = ("amx_emul/", "fc/emul/w/tensor_scale", "fc_weight_only/emul/w/tensor_scale")
    own = {t.name: t.data_type for t in out.graph.initializer if not t.name.startswith(added)}
    uint8 = TensorProto.UINT8
    assert own == {"w.codes": uint8, "w.scales": uint8, "bias": TensorProto.FLOAT}
    run = session(out)
    spec = formats.get(fmt)
    for name in ("normal_4d", "wide_exponents", "ties", "zeros"):
        x = np.resize(adversarial_inputs(rng, spec, k, np.float32)[name], (2, 3, k))
        y_w4a4, y_w4 = run.run(None, {"x": x})
        assert_matmul_close(y_w4a4, formats.fake_quant(x, fmt), w, bias)
        assert_matmul_close(y_w4, x, w)


@pytest.mark.parametrize("shape", [(0, 40), (2, 0, 40), (40,), (2, 1, 3, 40)])
def test_matmul_any_rank_and_empty(shape, rng):
    """X of any rank, empty ones too (the weights' run-time guard reads X's first value)."""
    proto, w, bias = matmul_model("amxfp4", 40, n=6, rng=rng)
    leading = [f"d{i}" for i in range(len(shape) - 1)]
    for value, last in ((proto.graph.input[0], 40), *((y, 6) for y in proto.graph.output)):
        value.CopyFrom(
            helper.make_tensor_value_info(value.name, TensorProto.FLOAT, [*leading, last])
        )
    x = rng.standard_normal(shape).astype(np.float32)
    y_w4a4, y_w4 = session(emulate(proto)).run(None, {"x": x})
    assert y_w4a4.shape == y_w4.shape == (*shape[:-1], 6)
    rows = x.reshape(-1, 40)
    assert_matmul_close(y_w4a4.reshape(-1, 6), formats.fake_quant(rows, "amxfp4"), w, bias)
    assert_matmul_close(y_w4.reshape(-1, 6), rows, w)


@pytest.mark.parametrize("fmt", FORMATS)
def test_weight_decoding_bit_exact_for_any_bytes(fmt, rng):
    """Random code and scale bytes (NaN/Inf scale codes too): X = I reads W back exactly."""
    spec = formats.get(fmt)
    k, n = 40, 7
    nb = -(-k // spec.block_size)
    codes = rng.integers(0, 256, (n, nb * spec.block_size // 2), dtype=np.uint8)
    scales = rng.integers(0, 256, (n, nb, spec.scales_per_block), dtype=np.uint8)
    scales[scales == spec.scale_format.nan_code] = 1  # keep most rows free of NaN ...
    scales[0, -1, 0] = spec.scale_format.nan_code  # ... but one
    tensor_scale = np.float32(0.37) if spec.tensor_scale else None
    attrs = {"weight_format": fmt, "act_format": "none", "in_features": k}
    if spec.tensor_scale:
        attrs["weight_tensor_scale"] = float(tensor_scale)
    node = helper.make_node(
        "MatMul", ["x", "codes", "scales"], ["y"], domain="amx", name="fc", **attrs
    )
    inits = [numpy_helper.from_array(codes, "codes"), numpy_helper.from_array(scales, "scales")]
    proto = make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [k, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [k, n])],
        inits,
    )
    (y,) = session(emulate(proto)).run(None, {"x": np.eye(k, dtype=np.float32)})
    w = formats.dequantize(formats.Quantized(codes, scales, tensor_scale), fmt, k=k)
    with np.errstate(invalid="ignore"):
        want = np.eye(k, dtype=np.float32) @ w.T  # a row with NaN/Inf gives a NaN column
    assert np.isnan(want[:, 0]).all() and not np.isnan(want).all()
    assert_same_bits(y + 0.0, want + 0.0)  # + 0.0: a -0.0 weight sums to +0.0 in a product


@pytest.mark.parametrize("fmt", FORMATS)
def test_matmul_float16(fmt, rng):
    """float16 X and bias: X fake-quantized in float16, the product accumulated in float32."""
    k = 33
    proto, w, bias = matmul_model(fmt, k, n=5, dtype=np.float16, rng=rng)
    run = session(emulate(proto))
    x = (rng.standard_normal((2, 3, k)) * 4).astype(np.float16)
    y_w4a4, y_w4 = run.run(None, {"x": x})
    for got, xq, b in ((y_w4a4, formats.fake_quant(x, fmt), bias), (y_w4, x, 0)):
        assert got.dtype == np.float16
        want = xq.astype(np.float32) @ w.T + np.float32(b)
        np.testing.assert_allclose(
            got.astype(np.float32),
            want.astype(np.float16),
            rtol=2e-3,
            atol=1e-3 * np.abs(want).max(),
        )


# ---- the pass as a whole ---------------------------------------------------------------------


def test_pipeline_mlp_emulated_end_to_end(rng):
    """rewrite(..., emulate=True) on the tiny MLP equals the numpy W4A4 computation."""
    proto = tiny_models.mlp()
    model = ir.from_proto(proto)
    outcome = rewrite(model, Options(format="amxfp4", emulate=True))
    assert outcome.emulated_nodes == 2
    out = ir.to_proto(model)
    onnx.checker.check_model(out)
    assert all(n.domain == "" for n in out.graph.node)
    w = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    x = rng.standard_normal((2, 5, 64)).astype(np.float32)

    def layer(h, w_nk, b):
        w_q = formats.dequantize(formats.quantize(w_nk, "amxfp4"), "amxfp4", k=w_nk.shape[1])
        return np.maximum(formats.fake_quant(h, "amxfp4") @ w_q.T + b, 0)

    want = layer(layer(x, np.ascontiguousarray(w["w1"].T), w["b1"]), w["w2_nk"], w["b2"])
    (got,) = session(out).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def attention_reference(proto, x, fmt):
    """numpy forward of tiny_models.attention_block as rewritten W4A4 + attention quantized."""
    w = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    fq = functools.partial(formats.fake_quant, fmt=fmt)
    heads, dh = w["heads_shape"][2:]

    def linear(h, name):
        w_nk = np.ascontiguousarray(w[f"{name}.weight"].T)
        w_q = formats.dequantize(formats.quantize(w_nk, fmt), fmt, k=w_nk.shape[1])
        return fq(h) @ w_q.T

    def split(h):
        return h.reshape(*h.shape[:2], heads, dh).transpose(0, 2, 1, 3)

    def right(m):  # the right operand, quantized along its reduction (second-to-last) axis
        return fq(m.swapaxes(-1, -2)).swapaxes(-1, -2)

    q, k, v = (split(linear(x, p)) for p in ("q_proj", "k_proj", "v_proj"))
    s = fq(q) @ right(k.swapaxes(-1, -2)) * w["scale"]
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    a = (fq(p) @ right(v)).transpose(0, 2, 1, 3).reshape(x.shape)
    return (x + linear(a, "o_proj")) @ w["lm_head.weight"]


def test_pipeline_attention_any_sequence_length(rng):
    """Attention matmuls quantized along the key-sequence axis: K known only at run time."""
    # typed intermediates: the attention pass needs operand ranks behind the amx.MatMul nodes
    proto = onnx.shape_inference.infer_shapes(tiny_models.attention_block())
    model = ir.from_proto(proto)
    outcome = rewrite(model, Options(format="mxfp4", attention=True, emulate=True))
    assert outcome.emulated_nodes == 4 + 4  # q/k/v/o projections, both operands of qk and pv
    out = ir.to_proto(model)
    onnx.checker.check_model(out)
    run = session(out)
    for seq in (1, 31, 33):
        x = rng.standard_normal((2, seq, 64)).astype(np.float32)
        (logits,) = run.run(None, {"x": x})
        want = attention_reference(proto, x, "mxfp4")
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)


def test_stale_amx_import_removed_and_plain_model_untouched():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = ir.from_proto(proto)
    assert EmulatePass()(model).modified  # only the unused "amx" import goes
    assert "amx" not in model.opset_imports and len(model.graph) == 1
    assert not EmulatePass()(model).modified


def _bad_models():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    codes = numpy_helper.from_array(np.zeros((4, 16), np.uint8), "codes")
    scales = numpy_helper.from_array(np.zeros((4, 1, 1), np.uint8), "scales")

    def matmul(**attrs):
        attrs = {"weight_format": "nvfp4", "act_format": "none", "in_features": 32, **attrs}
        node = helper.make_node(
            "MatMul", ["x", "codes", "scales"], ["y"], domain="amx", name="fc", **attrs
        )
        return make_model([node], [x], [y], [codes, scales])

    same = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 32])
    old = make_model([quantize_node("x", "y", "amxfp4")], [x], [same], opset=17)
    unknown = make_model(
        [helper.make_node("Dequantize", ["x"], ["y"], domain="amx", name="dq")], [x], [same]
    )
    return {
        "opset 17": (old, "imports opset 17"),
        "unknown op": (unknown, "no emulation for this op"),
        "no tensor scale": (matmul(), "need the weight_tensor_scale attribute"),
        "wrong block count": (
            matmul(in_features=40, weight_tensor_scale=1.0),
            r"Wcodes has shape \[4, 16\]",
        ),
        "unknown format": (matmul(weight_format="fp3"), "unknown format 'fp3'"),
    }


@pytest.mark.parametrize("case", list(_bad_models()))
def test_clear_errors_and_model_left_unchanged(case):
    proto, message = _bad_models()[case]
    model = ir.from_proto(proto)
    with pytest.raises(ValueError, match=message):
        EmulatePass()(model)
    untouched = ir.to_proto(ir.from_proto(proto)).SerializeToString()
    assert ir.to_proto(model).SerializeToString() == untouched


# ---- onnxruntime's graph optimizations ------------------------------------------------------

LEVELS = {
    "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def optimized_session(proto, level, cast_chains=False, saved=None):
    """A session at ``level``; ``cast_chains``: with onnxruntime's opt-in CastChainElimination,
    which merges any Cast -> Cast; ``saved``: where to write the optimized model."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = LEVELS[level]
    if cast_chains:
        options.add_session_config_entry("optimization.enable_cast_chain_elimination", "1")
    if saved is not None:
        options.optimized_model_filepath = str(saved)
    return ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


@pytest.mark.parametrize("cast_chains", [False, True], ids=["", "cast_chains"])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("act", ["same", "none"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_half_precision_rounding_survives_onnxruntime(fmt, act, dtype, level, cast_chains):
    """float16 / bfloat16 neighbours: onnxruntime must not cancel the emulation's own Casts.

    Its CPU EP runs a float16 Add or Mul in float32 between Casts it inserts, and then removes
    each pair of Casts in which one is its own: a Cast(fp32 -> fp16) of the emulation feeding
    such a Cast(fp16 -> fp32) went with it, at every optimization level, and the matmul's
    input and output reached their neighbours unrounded.
    """
    act_format = fmt if act == "same" else "none"
    proto, feeds, want = tiny_models.half_precision_matmul(fmt, act_format, dtype)
    outputs = optimized_session(emulate(proto), level, cast_chains).run(None, feeds)
    names = [y.name for y in proto.graph.output]
    for name, got, expected in zip(names, outputs, want, strict=True):
        assert_same_bits(got, expected, f"{name} {dtype} {level}")


def test_weight_decoding_is_not_constant_folded(tmp_path):
    """onnxruntime keeps the weights 4-bit at load: no float32 copy of them appears.

    Folding the decode held every intermediate of every layer until the folding ended (7.7x
    the float32 weights: benchmarks/emulation_memory.py), more than a model of a few GB fits in.
    """
    k, n = 256, 128
    proto, w, bias = matmul_model("amxfp4", k, n, rng=np.random.default_rng(0))
    saved = tmp_path / "optimized.onnx"
    run = optimized_session(emulate(proto), "all", saved=saved)
    optimized = onnx.load(saved)
    floats = {
        t.name: int(np.prod(t.dims))
        for t in optimized.graph.initializer
        if t.data_type not in (TensorProto.UINT8, TensorProto.INT64)
    }
    # the largest float initializers: the bias, the 256-entry scale table
    assert max(floats.values()) <= 256, sorted(floats.items(), key=lambda s: -s[1])[:3]
    assert "GatherElements" in {node.op_type for node in optimized.graph.node}
    x = np.random.default_rng(1).standard_normal((2, 3, k)).astype(np.float32)
    y_w4a4, y_w4 = run.run(None, {"x": x})
    assert_matmul_close(y_w4a4, formats.fake_quant(x, "amxfp4"), w, bias)
    assert_matmul_close(y_w4, x, w)
