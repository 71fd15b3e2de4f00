"""The rewrite on graphs other exporters write: chained, shared and tied linears, odd biases
and weights, linears in If / Loop / Scan bodies, and which layer is the head.

Each rewritten model is run (custom ops when built, else the emulation; both forms where it
matters) and held to fake_quant(X) @ dequant(W)ᵀ (+ bias) computed from the original weights.
"""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import tiny_models
from onnx import TensorProto, helper, numpy_helper

from amx_export import formats
from amx_export.graph_passes.pipeline import Options, rewrite
from amx_export.ort import model_session

F32 = TensorProto.FLOAT


def _model(nodes, inits, x_shape, y_shape, inputs=None, opset=18):
    inputs = inputs or [helper.make_tensor_value_info("x", F32, x_shape)]
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", F32, y_shape)],
        [numpy_helper.from_array(a, name) for name, a in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def _rewrite(proto, **options):
    model = ir.from_proto(proto)
    outcome = rewrite(model, Options(**options))
    onnx.checker.check_model(ir.to_proto(model))
    return model, outcome


def _run(model, feeds, native=None):
    session, _ = model_session(ir.from_proto(ir.to_proto(model)), "test", native=native)
    return session.run(None, feeds)[0]


def _linear(x, w_kn, fmt="amxfp4", act=True, bias=None):
    """fake_quant(x) @ dequant(quantize(W)) (+ bias) in float64, W given as [K, N]."""
    w_nk = np.ascontiguousarray(w_kn.T.astype(np.float32))
    w = formats.dequantize(formats.quantize(w_nk, fmt), fmt, k=w_nk.shape[1])
    xq = formats.fake_quant(x.astype(np.float32), fmt) if act else x
    y = xq.astype(np.float64) @ w.T.astype(np.float64)
    return y if bias is None else y + bias


def _close(got, want, tol=1e-5):
    assert np.abs(got - want).max() <= tol * max(np.abs(want).max(), 1e-30)


def _weights(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes]


def _packed(model):
    return sorted(n for n in model.graph.initializers if n.endswith(".codes"))


# ---- 1. chains --------------------------------------------------------------------------


@pytest.mark.parametrize("chain", ["matmul-matmul", "matmul-add-matmul", "gemm-gemm"])
@pytest.mark.parametrize("emulate", [False, True], ids=["custom-ops", "emulated"])
def test_chained_linears(chain, emulate):
    w1, w2 = _weights((32, 48), (48, 16))
    b = np.linspace(-1, 1, 48).astype(np.float32)
    op = "Gemm" if chain == "gemm-gemm" else "MatMul"
    nodes = [helper.make_node(op, ["x", "W1"], ["h"], name="fc1")]
    if chain == "matmul-add-matmul":
        nodes = [helper.make_node(op, ["x", "W1"], ["h0"], name="fc1"),
                 helper.make_node("Add", ["h0", "b"], ["h"], name="fc1_bias")]  # fmt: skip
    nodes.append(helper.make_node(op, ["h", "W2"], ["y"], name="fc2"))
    proto = _model(nodes, {"W1": w1, "W2": w2, "b": b}, [5, 32], [5, 16])
    model, outcome = _rewrite(proto, weights_only=True, emulate=emulate)
    assert len(outcome.quantized) == 2
    x = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)
    h = _linear(x, w1, act=False, bias=b if chain == "matmul-add-matmul" else None)
    want = _linear(h.astype(np.float32), w2, act=False)
    _close(_run(model, {"x": x}), want, 1e-4)


# ---- 2. shared and tied weights ------------------------------------------------------------


@pytest.mark.parametrize("second", ["transpose", "gemm-transB", "same"])
def test_one_initializer_two_linears(second):
    """W read as [K, N] by one layer and as Wᵀ by the other is two matrices (two packed
    weights); read the same way twice, it is one."""
    (w,) = _weights((32, 32))
    first = helper.make_node("MatMul", ["x", "W"], ["h"], name="fc1")
    if second == "transpose":
        nodes = [first, helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
                 helper.make_node("MatMul", ["h", "Wt"], ["y"], name="fc2")]  # fmt: skip
        w2 = w.T
    elif second == "gemm-transB":
        nodes = [first, helper.make_node("Gemm", ["h", "W"], ["y"], transB=1, name="fc2")]
        w2 = w.T
    else:
        nodes = [first, helper.make_node("MatMul", ["h", "W"], ["y"], name="fc2")]
        w2 = w
    model, outcome = _rewrite(_model(nodes, {"W": w}, [4, 32], [4, 32]))
    assert len(outcome.quantized) == 2
    assert len(_packed(model)) == (1 if second == "same" else 2)
    shares = [r.shares for r in outcome.quantized]
    assert shares == (["", "fc1"] if second == "same" else ["", ""])
    x = np.random.default_rng(2).standard_normal((4, 32)).astype(np.float32)
    h = _linear(x, w)
    _close(_run(model, {"x": x}), _linear(h.astype(np.float32), w2), 1e-4)


def test_existing_initializer_named_like_a_packed_weight():
    w1, w2 = _weights((32, 16), (16, 8))
    decoy = np.arange(8, dtype=np.uint8)  # the name the packed W would get, already taken
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["y"], name="fc2"),
        helper.make_node("Identity", ["W.amxfp4.codes"], ["decoy"]),
    ]
    proto = _model(nodes, {"W": w1, "W2": w2, "W.amxfp4.codes": decoy}, [3, 32], [3, 8])
    proto.graph.output.append(helper.make_tensor_value_info("decoy", TensorProto.UINT8, [8]))
    model, outcome = _rewrite(proto, weights_only=True)
    assert len(outcome.quantized) == 2
    assert np.array_equal(model.graph.initializers["W.amxfp4.codes"].const_value.numpy(), decoy)
    assert "W.amxfp4_1.codes" in model.graph.initializers
    x = np.random.default_rng(3).standard_normal((3, 32)).astype(np.float32)
    r = np.maximum(_linear(x, w1, act=False), 0)
    _close(_run(model, {"x": x}), _linear(r.astype(np.float32), w2, act=False), 1e-4)


# ---- 3. biases and weights that do not fold or do not fit -----------------------------------


@pytest.mark.parametrize(
    "shape, folded",
    [((16,), True), ((1,), True), ((), True), ((1, 16), True), ((1, 1, 16), False),
     ((4, 16), False)],
)  # fmt: skip
def test_bias_add_of_every_broadcast_shape(shape, folded):
    (w,) = _weights((32, 16))
    bias = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
             helper.make_node("Add", ["h", "b"], ["y"], name="bias")]  # fmt: skip
    out = list(np.broadcast_shapes((4, 16), shape))
    model, outcome = _rewrite(_model(nodes, {"W": w, "b": bias}, [4, 32], out))
    (node,) = [n for n in model.graph if n.domain == "amx"]
    assert (len(node.inputs) == 4) == folded
    assert any(n.op_type == "Add" for n in model.graph) != folded
    x = np.random.default_rng(5).standard_normal((4, 32)).astype(np.float32)
    for native in (None, False):
        _close(_run(model, {"x": x}, native), _linear(x, w, bias=bias), 1e-5)


@pytest.mark.parametrize(
    "weight, reason",
    [
        (np.zeros((0, 16), np.float32), "empty weight [0, 16]"),
        (np.zeros((16, 0), np.float32), "empty weight [16, 0]"),
        (np.ones((16, 8), np.float64), "float64 weight (float64): amx.MatMul takes"),
        (np.ones((16, 8), np.int32), "integer weight (int32): amx.MatMul takes"),
    ],
    ids=["K=0", "N=0", "float64", "int32"],
)
def test_weights_the_op_cannot_take_are_skipped_with_the_reason(weight, reason):
    (w_ok,) = _weights((16, 16))
    k, n = weight.shape
    dtype = helper.np_dtype_to_tensor_dtype(weight.dtype)
    nodes = [helper.make_node("MatMul", ["x", "W_ok"], ["h"], name="ok"),
             helper.make_node("Cast", ["h"], ["h2"], to=dtype),
             helper.make_node("MatMul", ["h2", "W"], ["y0"], name="odd"),
             helper.make_node("Cast", ["y0"], ["y"], to=F32)]  # fmt: skip
    if k == 0:  # a [.., 0] input cannot come from a 16-wide layer: feed it directly
        nodes[2] = helper.make_node("MatMul", ["z", "W"], ["y0"], name="odd")
    inputs = [helper.make_tensor_value_info("x", F32, [2, 16]),
              helper.make_tensor_value_info("z", dtype, [2, 0])]  # fmt: skip
    proto = _model(nodes, {"W_ok": w_ok, "W": weight}, None, [2, n], inputs=inputs)
    model, outcome = _rewrite(proto)
    skipped = {r.name: r.reason for r in outcome.layers if r.status == "skipped"}
    assert list(skipped) == ["odd"] and skipped["odd"].startswith(reason)
    assert [r.name for r in outcome.quantized] == ["ok"]
    feeds = {"x": np.ones((2, 16), np.float32), "z": np.ones((2, 0), weight.dtype)}
    assert _run(model, feeds).shape == (2, n)


# ---- 4. subgraphs ------------------------------------------------------------------------


@pytest.mark.parametrize("emulate", [False, True], ids=["custom-ops", "emulated"])
def test_if_branches_rewritten_and_their_weight_packed_once(emulate):
    proto, w = tiny_models.if_branches()
    model, outcome = _rewrite(proto, emulate=emulate)
    names = sorted(r.name for r in outcome.quantized)
    assert names == ["branch.else_branch: else_fc", "branch.then_branch: then_fc"]
    assert [bool(r.shares) for r in outcome.quantized].count(True) == 1  # the same matrix
    x = np.random.default_rng(6).standard_normal((3, 48)).astype(np.float32)
    want = np.maximum(_linear(x, w), 0)
    for cond in (True, False):
        _close(_run(model, {"x": x, "cond": np.array(cond)}), want)


@pytest.mark.parametrize("body", ["loop", "scan"])
def test_loop_and_scan_bodies_rewritten(body):
    if body == "loop":
        proto, w = tiny_models.loop_body()
        x = np.random.default_rng(7).standard_normal((3, 40)).astype(np.float32)
        want = x
        for _ in range(3):
            want = np.maximum(_linear(want.astype(np.float32), w, act=False), 0)
    else:
        proto, w = tiny_models.scan_body()
        x = np.random.default_rng(8).standard_normal((2, 3, 36)).astype(np.float32)
        want = np.stack([_linear(s, w, act=False) for s in x])
    model, outcome = _rewrite(proto, weights_only=True)
    assert [r.name for r in outcome.quantized] == [f"{body}.body: {body}_fc"]
    for native in (None, False):
        _close(_run(model, {"x": x}, native), want, 1e-4)


# ---- 6. which layer is the head -----------------------------------------------------------


def _embedding_model(head: str):
    """ids -> Gather(E [V, D]) -> MatMul(W [D, D]) -> head -> y; the head reads E tied
    (through Transpose), a weight with N = V, or is a pooler-like [D, D] layer."""
    v, d = 40, 32
    e, w, h = _weights((v, d), (d, d), (d, v if head != "pooler" else d), seed=9)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
             helper.make_node("MatMul", ["emb", "W"], ["hid"], name="proj")]  # fmt: skip
    if head == "tied":
        nodes += [helper.make_node("Transpose", ["E"], ["Et"], perm=[1, 0]),
                  helper.make_node("MatMul", ["hid", "Et"], ["y"], name="out")]  # fmt: skip
    else:
        nodes.append(helper.make_node("MatMul", ["hid", "H"], ["y"], name="out"))
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])]
    n = d if head == "pooler" else v
    return _model(nodes, {"E": e, "W": w, "H": h}, None, [2, 3, n], inputs=inputs)


@pytest.mark.parametrize(
    "head, reason",
    [
        ("tied", "language-model head, tied to the embedding 'E'"),
        ("vocab", "language-model head, N = 40 (the vocabulary) gives output 'y'"),
        ("pooler", None),
    ],
)
def test_head_rule(head, reason):
    _, outcome = _rewrite(_embedding_model(head))
    records = {r.name: r for r in outcome.layers}
    assert records["proj"].status == "quantized"
    if reason is None:  # a last linear that is no LM head is rewritten like any other
        assert records["out"].status == "quantized"
    else:
        assert records["out"].status == "skipped"
        assert records["out"].reason.startswith(reason)
    _, outcome = _rewrite(_embedding_model(head), include_head=True)
    assert len(outcome.quantized) == 2
