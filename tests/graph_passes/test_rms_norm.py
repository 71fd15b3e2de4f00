"""DivideByRootPass: torch's RMSNorm form rewritten so that onnxruntime fuses it."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from amx_export.graph_passes.rms_norm import DivideByRootPass

HIDDEN = 48


def rms_norm_model(swap: bool = False, extra_use: bool = False) -> onnx.ModelProto:
    """y = x * Reciprocal(Sqrt(mean(x^2) + eps)) * w, as torch exports it."""
    inits = [
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
        numpy_helper.from_array(np.array([-1], np.int64), "axes"),
        numpy_helper.from_array(np.linspace(0.5, 1.5, HIDDEN, dtype=np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["mean"], keepdims=1),
        helper.make_node("Add", ["mean", "eps"], ["var"]),
        helper.make_node("Sqrt", ["var"], ["root"]),
        helper.make_node("Reciprocal", ["root"], ["inv"]),
        helper.make_node("Mul", ["inv", "x"] if swap else ["x", "inv"], ["normed"]),
        helper.make_node("Mul", ["normed", "w"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", HIDDEN])]
    if extra_use:  # a use that is not a Mul: the Reciprocal must stay
        nodes.append(helper.make_node("Add", ["inv", "eps"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "rms_norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", HIDDEN])],
        outputs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def rewritten(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    model = ir.serde.deserialize_model(proto)
    result = DivideByRootPass()(model)
    return ir.serde.serialize_model(model), result.modified


def op_counts(proto: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(node.op_type for node in proto.graph.node)


def run(proto: onnx.ModelProto, x: np.ndarray, tmp_path, optimized: str | None = None):
    options = ort.SessionOptions()
    if optimized:
        options.optimized_model_filepath = str(tmp_path / optimized)
    session = ort.InferenceSession(proto.SerializeToString(), options)
    return session.run(None, {"x": x})


def test_rewrites_to_div_and_onnxruntime_fuses_it(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 5, HIDDEN)).astype(np.float32) * 3
    for swap in (False, True):
        proto, modified = rewritten(rms_norm_model(swap=swap))
        assert modified
        counts = op_counts(proto)
        assert counts["Reciprocal"] == 0 and counts["Div"] == 1
        assert [o.name for o in proto.graph.output] == ["y"]
        onnx.checker.check_model(proto, full_check=True)
        before = run(rms_norm_model(swap=swap), x, tmp_path)[0]
        after = run(proto, x, tmp_path, optimized="opt.onnx")[0]
        np.testing.assert_allclose(after, before, rtol=2e-6, atol=0)
        fused = op_counts(onnx.load(str(tmp_path / "opt.onnx")))
        assert fused["SimplifiedLayerNormalization"] == 1, fused
        # the unrewritten form is what onnxruntime did not fuse
        run(rms_norm_model(swap=swap), x, tmp_path, optimized="plain.onnx")
        plain = op_counts(onnx.load(str(tmp_path / "plain.onnx")))
        assert plain["SimplifiedLayerNormalization"] == 0


def test_leaves_a_reciprocal_with_other_uses():
    proto, modified = rewritten(rms_norm_model(extra_use=True))
    assert not modified
    assert op_counts(proto)["Reciprocal"] == 1 and op_counts(proto)["Div"] == 0
