"""QuantizeLinearsPass on small graphs: what is matched, packed, folded and skipped."""

import numpy as np
import onnx_ir as ir
import pytest
import tiny_models
from onnx import numpy_helper
from onnx_ir.passes.common import ShapeInferencePass

from amx_export import formats
from amx_export.graph_passes.cleanup import CleanupPass
from amx_export.graph_passes.quantize_linears import QuantizeLinearsPass


def run(proto, **kwargs):
    model = ir.from_proto(proto)
    ShapeInferencePass(strict_mode=False)(model)  # as the pipeline does: ranks for bias folding
    quantize = QuantizeLinearsPass(**kwargs)
    result = quantize(model)
    CleanupPass()(model)
    return model, quantize, result


def amx_nodes(model):
    return {n.name: n for n in model.graph if n.domain == "amx"}


def weights(proto):
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_mlp_layers_packed_bit_exact_and_biases_folded():
    proto = tiny_models.mlp()
    w = weights(proto)
    model, quantize, result = run(proto)
    assert result.modified
    nodes = amx_nodes(model)
    assert set(nodes) == {"fc1", "fc2"}
    assert [n.op_type for n in model.graph] == ["MatMul", "Relu", "MatMul", "Relu"]
    inits = model.graph.initializers
    for name, weight_nk in (("w1", w["w1"].T), ("w2_nk", w["w2_nk"])):
        q = formats.quantize(np.ascontiguousarray(weight_nk), "amxfp4")
        assert np.array_equal(inits[f"{name}.amxfp4.codes"].const_value.numpy(), q.codes)
        assert np.array_equal(inits[f"{name}.amxfp4.scales"].const_value.numpy(), q.scales)
    fc1, fc2 = nodes["fc1"], nodes["fc2"]
    assert fc1.inputs[3].name == "b1"  # the [N] bias initializer is reused as it is
    assert np.array_equal(fc2.inputs[3].const_value.numpy(), w["b2"].reshape(-1))
    assert fc1.attributes["in_features"].value == 64 and fc2.attributes["in_features"].value == 96
    assert fc1.attributes["weight_format"].value == "amxfp4"
    assert fc1.attributes["act_format"].value == "amxfp4"
    assert model.opset_imports["amx"] == 1
    # the float weights, their Transpose and the old bias are gone
    assert not {"w1", "w2_nk", "b2"} & set(inits)
    assert [r.status for r in quantize.records] == ["quantized", "quantized"]
    assert quantize.records[0].bytes_before == 64 * 96 * 4
    assert quantize.records[0].bytes_after == 96 * 32 + 96 * 2 * 2


@pytest.mark.parametrize("trans_a", [0, 1])
def test_gemm_alpha_beta_trans_folded(trans_a):
    proto = tiny_models.gemm(trans_a=trans_a, trans_b=1, alpha=0.5, beta=2.0)
    w = weights(proto)
    model, _, _ = run(proto, weight_format="mxfp4")
    (node,) = amx_nodes(model).values()
    q = formats.quantize(w["B"] * np.float32(0.5), "mxfp4")
    assert np.array_equal(node.inputs[1].const_value.numpy(), q.codes)
    assert np.array_equal(node.inputs[3].const_value.numpy(), w["C"] * np.float32(2.0))
    producer = node.inputs[0].producer()
    assert (producer is not None and producer.op_type == "Transpose") == bool(trans_a)


def test_nvfp4_weight_tensor_scale_attribute():
    proto = tiny_models.mlp()
    model, _, _ = run(proto, weight_format="nvfp4", act_format="nvfp4")
    fc1 = amx_nodes(model)["fc1"]
    expected = formats.quantize(np.ascontiguousarray(weights(proto)["w1"].T), "nvfp4")
    assert fc1.attributes["weight_tensor_scale"].value == pytest.approx(
        float(expected.tensor_scale), rel=0, abs=0
    )


def test_head_skipped_unless_included_and_exclude_patterns():
    proto = tiny_models.attention_block()
    _, quantize, _ = run(proto)
    status = {r.name: (r.status, r.reason) for r in quantize.records}
    head = "language-model head, named lm_head (kept in full precision)"
    assert status["lm_head"] == ("skipped", head)
    assert {n for n, s in status.items() if s[0] == "quantized"} == {
        "q_proj", "k_proj", "v_proj", "o_proj",
    }  # fmt: skip
    model, _, _ = run(proto, include_head=True, exclude=[r"^[qk]_proj$"])
    assert set(amx_nodes(model)) == {"v_proj", "o_proj", "lm_head"}


def test_weights_only_and_activation_matmuls_untouched():
    model, _, _ = run(tiny_models.attention_block(), act_format="none")
    assert {n.attributes["act_format"].value for n in amx_nodes(model).values()} == {"none"}
    plain = [n.name for n in model.graph if n.op_type == "MatMul" and n.domain == ""]
    assert plain == ["qk", "pv", "lm_head"]


def test_weight_given_as_graph_input_is_reported():
    proto = tiny_models.mlp()
    init = proto.graph.initializer
    w1 = next(t for t in init if t.name == "w1")
    init.remove(w1)
    from onnx import TensorProto, helper

    proto.graph.input.append(helper.make_tensor_value_info("w1", TensorProto.FLOAT, [64, 96]))
    _, quantize, _ = run(proto)
    reasons = {r.name: r.reason for r in quantize.records if r.status == "skipped"}
    assert reasons == {"fc1": "weight 'w1' is a graph input, not a constant"}


def test_second_run_changes_nothing():
    model, _, _ = run(tiny_models.mlp())
    before = ir.to_proto(model).SerializeToString()
    result = QuantizeLinearsPass()(model)
    assert not result.modified
    assert ir.to_proto(model).SerializeToString() == before
