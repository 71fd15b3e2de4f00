"""The whole job on a real language model: SmolLM2-135M exported with torch.onnx, rewritten
for every format, lowered to standard ops, run in stock onnxruntime, and each checked layer
compared with numpy's fake_quant(X) @ dequant(W)ᵀ on the real activations it received."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from amx_export import formats
from graph_passes.cleanup import CleanupPass
from graph_passes.emulate import EmulatePass
from graph_passes.pipeline import Options, rewrite

pytestmark = pytest.mark.slow
CHECKED_LAYERS = 7  # the first decoder layer: q, k, v, o, gate, up, down


def expose(model: ir.Model, count: int):
    """Make the first ``count`` amx.MatMul nodes' inputs and outputs graph outputs."""
    exposed = []
    for node in model.graph:
        if node.domain == "amx" and node.op_type == "MatMul" and len(exposed) < count:
            w = {
                "codes": node.inputs[1].const_value.numpy(),
                "scales": node.inputs[2].const_value.numpy(),
                "bias": None if len(node.inputs) < 4 else node.inputs[3].const_value.numpy(),
                "attrs": {k: a.value for k, a in node.attributes.items()},
            }
            for value in (node.inputs[0], node.outputs[0]):
                if value not in model.graph.outputs:
                    model.graph.outputs.append(value)
            exposed.append((node.inputs[0].name, node.outputs[0].name, w))
    return exposed


def numpy_linear(x: np.ndarray, w: dict) -> np.ndarray:
    attrs = w["attrs"]
    fmt, act = attrs["weight_format"], attrs["act_format"]
    q = formats.Quantized(w["codes"], w["scales"], attrs.get("weight_tensor_scale"))
    if q.tensor_scale is not None:
        q = q._replace(tensor_scale=np.float32(q.tensor_scale))
    weight = formats.dequantize(q, fmt, k=attrs["in_features"]).astype(np.float64)
    xq = x if act == "none" else formats.fake_quant(x, act)
    y = xq.astype(np.float64) @ weight.T
    return y if w["bias"] is None else y + w["bias"]


@pytest.mark.parametrize("fmt", formats.names())
def test_emulated_layers_equal_numpy_on_real_activations(smollm2_onnx, fmt):
    model = ir.load(smollm2_onnx)
    outcome = rewrite(model, Options(format=fmt))
    assert len(outcome.quantized) == 210  # 30 layers x 7 linears; the head is kept
    exposed = expose(model, CHECKED_LAYERS)
    EmulatePass()(model)
    CleanupPass()(model)
    assert not any(n.domain == "amx" for n in model.graph)
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString())
    ids = np.random.default_rng(0).integers(0, 49152, (1, 24)).astype(np.int64)
    names = [o.name for o in session.get_outputs()]
    results = dict(zip(names, session.run(None, {"input_ids": ids}), strict=True))
    assert np.isfinite(results["logits"]).all()
    for x_name, y_name, weights in exposed:
        expected = numpy_linear(results[x_name], weights)
        got = results[y_name].astype(np.float64)
        scale = np.abs(expected).max()
        # float32 accumulation over K <= 1536 terms: well inside 1e-4 of the output range
        assert np.abs(got - expected).max() <= 1e-4 * scale, (fmt, y_name)
