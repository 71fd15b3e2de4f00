"""The whole job on a real language model: SmolLM2-135M exported with torch.onnx, rewritten
for every format, lowered to standard ops, run in stock onnxruntime, and each checked layer
compared with numpy's fake_quant(X) @ dequant(W)ᵀ on the real activations it received."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from amx_export import formats
from amx_export.decoder_io import describe, full_pass_feeds, presents, step_feeds
from amx_export.graph_passes.cleanup import CleanupPass
from amx_export.graph_passes.emulate import EmulatePass
from amx_export.graph_passes.pipeline import Options, rewrite
from amx_export.layer_check import expose_layers

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


def test_cache_decoder_equals_transformers_on_smollm2(smollm2_model, smollm2_onnx):
    """SmolLM2's KV-cache graph: a 16-token prefill, then 4 decode steps, against transformers
    with its DynamicCache (logits and the last step's presents)."""
    import torch
    from transformers import DynamicCache

    session = ort.InferenceSession(smollm2_onnx)
    io = describe(session)
    assert (len(io.past), io.kv_heads, io.head_dim) == (60, 3, 64)
    fetch = [io.logits] + [io.present(n) for n in io.past]
    cache, past = DynamicCache(config=smollm2_model.config), None
    ids = np.random.default_rng(0).integers(0, 49152, (1, 16)).astype(np.int64)
    for _ in range(5):
        values = session.run(fetch, step_feeds(io, ids, None, past))
        past = presents(io, fetch[1:], values[1:])
        with torch.no_grad():
            out = smollm2_model(input_ids=torch.from_numpy(ids), cache=cache, use_cache=True)
        cache, want = out.cache, out.logits.numpy()
        # float32 over 30 layers, logits of order 10: sums in another order
        assert np.abs(values[0] - want).max() <= 2e-3 * np.abs(want).max()
        ids = want[:, -1:].argmax(-1)
    assert past["past_key_values.29.value"].shape == (1, 3, 20, 64)
    worst = max(
        np.abs(past[f"past_key_values.{i}.{kind}"] - getattr(layer, kind + "s").numpy()).max()
        for i, layer in enumerate(cache.layers)
        for kind in ("key", "value")
    )
    assert worst <= 1e-3, worst
