"""The whole job on a real language model: SmolLM2-135M exported with torch.onnx, rewritten
for every format, lowered to standard ops, run in stock onnxruntime, and each checked layer
compared with numpy's fake_quant(X) @ dequant(W)ᵀ on the real activations it received."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from amx_export import formats
from amx_export.decoder_io import describe, full_pass_feeds
from amx_export.layer_check import expose_layers
from graph_passes.cleanup import CleanupPass
from graph_passes.emulate import EmulatePass
from graph_passes.pipeline import Options, rewrite

pytestmark = pytest.mark.slow
CHECKED_LAYERS = 7  # the first decoder layer: q, k, v, o, gate, up, down


@pytest.mark.parametrize("fmt", formats.names())
def test_emulated_layers_equal_numpy_on_real_activations(smollm2_onnx, fmt):
    model = ir.load(smollm2_onnx)
    outcome = rewrite(model, Options(format=fmt))
    assert len(outcome.quantized) == 210  # 30 layers x 7 linears; the head is kept
    layers = expose_layers(model, CHECKED_LAYERS)
    EmulatePass()(model)
    CleanupPass()(model)
    assert not any(n.domain == "amx" for n in model.graph)
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString())
    ids = np.random.default_rng(0).integers(0, 49152, (1, 24)).astype(np.int64)
    names = [o.name for o in session.get_outputs()]
    feeds = full_pass_feeds(describe(session), ids)
    results = dict(zip(names, session.run(None, feeds), strict=True))
    assert np.isfinite(results["logits"]).all()
    for layer in layers:
        # float32 accumulation over K <= 1536 terms: well inside 1e-4 of the output range
        assert layer.error(results[layer.x], results[layer.y]) <= 1e-4, (fmt, layer.name)
