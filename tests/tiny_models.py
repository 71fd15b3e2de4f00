"""Small ONNX models built in code for the pass tests (no exporter, no torch)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def _model(nodes, inputs, outputs, initializers, opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def mlp(k: int = 64, hidden: int = 96, n: int = 40, seed: int = 0, opset: int = 18):
    """x[B, S, K] -> MatMul+Add -> Relu -> MatMul(Transpose(W2[N, H])) -> Add -> y[B, S, N]."""
    rng = np.random.default_rng(seed)
    f = np.float32
    inits = [
        _init("w1", rng.standard_normal((k, hidden)).astype(f)),
        _init("b1", rng.standard_normal(hidden).astype(f)),
        _init("w2_nk", rng.standard_normal((n, hidden)).astype(f)),
        _init("b2", rng.standard_normal((1, n)).astype(f)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="act"),
        helper.make_node("Transpose", ["w2_nk"], ["w2"], perm=[1, 0], name="w2_T"),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="fc2"),
        helper.make_node("Add", ["b2", "h3"], ["h4"], name="fc2_bias"),
        helper.make_node("Relu", ["h4"], ["y"], name="out_act"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", n])
    return _model(nodes, [x], [y], inits, opset)


def gemm(k: int = 48, n: int = 24, trans_a: int = 0, trans_b: int = 1, alpha=0.5, beta=2.0):
    """y = alpha * A' @ B' + beta * C with constant B and C (one value per column)."""
    rng = np.random.default_rng(1)
    f = np.float32
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(f)
    inits = [_init("B", b), _init("C", rng.standard_normal(n).astype(f))]
    node = helper.make_node(
        "Gemm", ["A", "B", "C"], ["Y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta,
        name="gemm",
    )  # fmt: skip
    shape = [k, "m"] if trans_a else ["m", k]
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, shape)
    # a Relu after the Gemm so that it is not taken for a language-model head
    relu = helper.make_node("Relu", ["Y"], ["Z"], name="relu")
    z = helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["m", n])
    return _model([node, relu], [a], [z], inits)


def attention_block(d: int = 64, heads: int = 2, vocab: int = 50, seed: int = 2):
    """One pre-projection attention block plus an LM head:

    x[B, S, D] -> q/k/v projections -> heads -> softmax(Q Kᵀ / sqrt(dh)) V -> o_proj -> lm_head
    """
    rng = np.random.default_rng(seed)
    f = np.float32
    dh = d // heads
    inits = [
        _init(f"{p}_proj.weight", (rng.standard_normal((d, d)) / np.sqrt(d)).astype(f))
        for p in ("q", "k", "v", "o")
    ]
    inits += [
        _init("lm_head.weight", rng.standard_normal((d, vocab)).astype(f)),
        _init("heads_shape", np.array([0, 0, heads, dh], np.int64)),
        _init("merge_shape", np.array([0, 0, d], np.int64)),
        _init("scale", np.array(1 / np.sqrt(dh), f)),
    ]
    nodes = []
    for p in ("q", "k", "v"):
        nodes += [
            helper.make_node("MatMul", ["x", f"{p}_proj.weight"], [f"{p}0"], name=f"{p}_proj"),
            helper.make_node("Reshape", [f"{p}0", "heads_shape"], [f"{p}1"], name=f"{p}_split"),
            helper.make_node("Transpose", [f"{p}1"], [f"{p}"], perm=[0, 2, 1, 3], name=f"{p}_T"),
        ]
    nodes += [
        helper.make_node("Transpose", ["k"], ["kT"], perm=[0, 1, 3, 2], name="k_TT"),
        helper.make_node("MatMul", ["q", "kT"], ["s0"], name="qk"),
        helper.make_node("Mul", ["s0", "scale"], ["s1"], name="qk_scale"),
        helper.make_node("Softmax", ["s1"], ["p"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["p", "v"], ["a0"], name="pv"),
        helper.make_node("Transpose", ["a0"], ["a1"], perm=[0, 2, 1, 3], name="a_T"),
        helper.make_node("Reshape", ["a1", "merge_shape"], ["a2"], name="merge"),
        helper.make_node("MatMul", ["a2", "o_proj.weight"], ["o"], name="o_proj"),
        helper.make_node("Add", ["x", "o"], ["h"], name="residual"),
        helper.make_node("MatMul", ["h", "lm_head.weight"], ["logits"], name="lm_head"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", d])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])
    return _model(nodes, [x], [y], inits)


def if_branches(k: int = 48, n: int = 40, seed: int = 3):
    """If(cond) with y = Relu(x @ W) in both branches: the then branch reads W [K, N], the
    else branch Transpose(W_nk), the same matrix stored the other way; both are main-graph
    initializers read from the branches as outer-scope values."""
    rng = np.random.default_rng(seed)
    f = np.float32
    w = rng.standard_normal((k, n)).astype(f)
    inits = [_init("W", w), _init("W_nk", np.ascontiguousarray(w.T))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])
    out = helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, ["m", n])

    def branch(name, weight_nodes, weight):
        nodes = weight_nodes + [
            helper.make_node("MatMul", ["x", weight], [f"{name}_h"], name=f"{name}_fc"),
            helper.make_node("Relu", [f"{name}_h"], ["branch_out"], name=f"{name}_relu"),
        ]
        return helper.make_graph(nodes, name, [], [out])

    then_g = branch("then", [], "W")
    else_t = helper.make_node("Transpose", ["W_nk"], ["else_W"], perm=[1, 0], name="else_T")
    else_g = branch("else", [else_t], "else_W")
    node = helper.make_node(
        "If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="branch"
    )
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])
    return _model([node], [x, cond], [y], inits), w


def loop_body(k: int = 40, trips: int = 3, seed: int = 4):
    """y = (Relu(v @ W))^trips applied to x, the MatMul inside a Loop body."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, k)) / np.sqrt(k)).astype(np.float32)
    body_in = [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        helper.make_tensor_value_info("v", TensorProto.FLOAT, ["m", k]),
    ]
    body_out = [
        helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["m", k]),
    ]
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c"], ["c_out"], name="keep_going"),
            helper.make_node("MatMul", ["v", "W"], ["h"], name="loop_fc"),
            helper.make_node("Relu", ["h"], ["v_out"], name="body_relu"),
        ],
        "body", body_in, body_out,
    )  # fmt: skip
    inits = [
        _init("W", w),
        _init("trips", np.array(trips, np.int64)),
        _init("true", np.array(True)),
    ]
    node = helper.make_node("Loop", ["trips", "true", "x"], ["y"], body=body, name="loop")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", k])
    return _model([node], [x], [y], inits), w


def scan_body(k: int = 36, n: int = 20, seed: int = 5):
    """y[s] = x[s] @ W for each s along axis 0 of x [S, M, K], the MatMul in a Scan body."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_s", "W"], ["y_s"], name="scan_fc")],
        "body",
        [helper.make_tensor_value_info("x_s", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y_s", TensorProto.FLOAT, ["m", n])],
    )
    node = helper.make_node("Scan", ["x"], ["y"], body=body, num_scan_inputs=1, name="scan")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["s", "m", k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["s", "m", n])
    return _model([node], [x], [y], [_init("W", w)]), w

def half_precision_matmul(fmt: str, act_format: str, dtype: str = "float16", seed: int = 0):
    """amx.MatMul nodes between float16 (or bfloat16) neighbours, with data that makes every
    float32 sum exact, so that the outputs are known bit for bit in any summation order.

    float16: onnxruntime's CPU EP has no float16 Add or Mul; it runs them in float32 between
    Casts of its own, which used to cancel the emulation's own Casts, on either side:

    - y_in: Add(a, b) -> amx.MatMul -> Reshape -> Mul(., r): the matmul's input is rounded to
      float16 (a: [64, 128) in steps of 1/16, b: a fraction of that step);
    - y_out: a -> amx.MatMul -> Mul(., r): its output is rounded to float16.

    r is a power of two (the Mul is exact). The Reshape is for the custom op: onnxruntime runs
    a float16 node whose neighbours all run in float32 in float32 too (its float32 kernel,
    no float16 rounding at all), which the emulation, rounding as the contract says, cannot
    follow. bfloat16 (no bfloat16 Add or Mul on the CPU EP): Cast(a) -> amx.MatMul -> Cast.

    Returns (model with amx nodes, feeds, expected float32 outputs).
    """
    from amx_export import formats

    rng = np.random.default_rng(seed)
    k, n, m = 64, 24, 5
    spec = formats.get(fmt)
    # weights on the E2M1 grid, every block holding both extremes; times 7/8 so that NVFP4's
    # tensor scale is a power of two (6 * 7/8 / (448 * 6) = 2**-9): few-bit decoded values
    grid = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float32)
    w = rng.choice(grid, (n, k)) * rng.choice([-1, 1], (n, k))
    w[:, :: spec.block_size], w[:, 1 :: spec.block_size] = 6, -6
    q = formats.quantize((w * 0.875).astype(np.float32), fmt)
    w64 = formats.dequantize(q, fmt, k=k).astype(np.float64)
    inits = [_init("w.codes", q.codes), _init("w.scales", q.scales)]
    attrs = {"weight_format": fmt, "act_format": act_format, "in_features": k}
    if q.tensor_scale is not None:
        attrs["weight_tensor_scale"] = float(q.tensor_scale)

    def matmul(x, y, name):
        return helper.make_node(
            "MatMul", [x, "w.codes", "w.scales"], [y], domain="amx", name=name, **attrs
        )

    def product(x):  # the amx.MatMul's output, as float32
        # contract: the activation is fake-quantized in float32, not rounded to X's dtype
        xq = x if act_format == "none" else formats.fake_quant(x.astype(np.float32), act_format)
        exact = xq.astype(np.float64) @ w64.T
        if act_format != "nvfp4":  # NVFP4's tensor scale g leaves the grid: exact to dtype only
            assert np.array_equal(exact.astype(np.float32), exact), "the test data lost exactness"
        return exact.astype(x.dtype).astype(np.float32)

    a = (rng.choice([-1, 1], (m, k)) * (64 + rng.integers(0, 1024, (m, k)) / 16)).astype(np.float32)
    f32 = TensorProto.FLOAT
    if dtype == "float16":
        b = rng.choice([-3 / 64, -1 / 32, 1 / 64, 1 / 32], (m, k)).astype(np.float32)
        r = rng.choice([-2.0, -0.5, 0.5, 1.0, 2.0], (m, n)).astype(np.float32)
        feeds = {"a": a.astype(np.float16), "b": b.astype(np.float16), "r": r.astype(np.float16)}
        inits.append(_init("rows", np.array([-1, n], np.int64)))
        nodes = [
            helper.make_node("Add", ["a", "b"], ["x"], name="residual_in"),
            matmul("x", "h_in", "fc_in"),
            helper.make_node("Reshape", ["h_in", "rows"], ["h_rows"], name="rows_in"),
            helper.make_node("Mul", ["h_rows", "r"], ["s_in"], name="scale_in"),
            helper.make_node("Cast", ["s_in"], ["y_in"], to=f32, name="y_in_f32"),
            matmul("a", "h_out", "fc_out"),
            helper.make_node("Mul", ["h_out", "r"], ["s_out"], name="scale_out"),
            helper.make_node("Cast", ["s_out"], ["y_out"], to=f32, name="y_out_f32"),
        ]
        f16 = TensorProto.FLOAT16
        inputs = [helper.make_tensor_value_info(v, f16, ["m", k]) for v in ("a", "b")]
        inputs.append(helper.make_tensor_value_info("r", f16, ["m", n]))
        x = (a + b).astype(np.float16)  # a float32 sum (exact) rounded once to float16
        expected = [product(x) * r, product(a.astype(np.float16)) * r]
    else:
        import ml_dtypes

        a += rng.uniform(-0.5, 0.5, (m, k)).astype(np.float32)  # rounds to bfloat16
        feeds = {"a": a}
        nodes = [
            helper.make_node("Cast", ["a"], ["x"], to=TensorProto.BFLOAT16, name="to_bf16"),
            matmul("x", "h", "fc"),
            helper.make_node("Cast", ["h"], ["y"], to=f32, name="y_f32"),
        ]
        inputs = [helper.make_tensor_value_info("a", f32, ["m", k])]
        expected = [product(a.astype(ml_dtypes.bfloat16))]
    names = [node.output[0] for node in nodes if node.name.startswith("y")]
    outputs = [helper.make_tensor_value_info(y, f32, ["m", n]) for y in names]
    graph = helper.make_graph(nodes, "half_precision", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("amx", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10), feeds, expected
