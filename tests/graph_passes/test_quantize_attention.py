"""QuantizeAttentionPass: amx.Quantize along each operand's reduction axis."""

import onnx_ir as ir
import tiny_models
from onnx_ir.passes.common import ShapeInferencePass

from amx_export.graph_passes.quantize_attention import QuantizeAttentionPass


def test_both_operands_of_qk_and_pv_quantized_along_reduction_axis():
    model = ir.from_proto(tiny_models.attention_block())
    ShapeInferencePass()(model)  # the pass reads operand ranks (the pipeline infers them)
    attention = QuantizeAttentionPass("mxfp4")
    assert attention(model).modified
    assert attention.quantized == {"qk": ["q", "kT"], "pv": ["p", "v"]}
    nodes = {n.name: n for n in model.graph}
    for matmul in ("qk", "pv"):
        left = nodes[matmul].inputs[0].producer()
        assert (left.domain, left.op_type) == ("amx", "Quantize")
        assert left.attributes["format"].value == "mxfp4"
        back = nodes[matmul].inputs[1].producer()  # right operand: transposed around Quantize
        assert back.op_type == "Transpose" and list(back.attributes["perm"].value) == [0, 1, 3, 2]
        assert back.inputs[0].producer().op_type == "Quantize"
    # linear layers (constant weights) are not touched
    assert all(n.domain == "" for n in model.graph if n.name.endswith("_proj"))
    assert not QuantizeAttentionPass("mxfp4")(model).modified  # idempotent
