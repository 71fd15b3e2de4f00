"""libamx_ort.so on SmolLM2-135M's exported graph: each checked layer equals numpy's
fake_quant(X) @ dequant(W)ᵀ on the activations it received, and the logits agree with the
emulated model's. The logits are compared statistically: the two runtimes sum in different
orders, and a last-bit difference that crosses a rounding boundary in a later layer moves the
logits by a quantization step (README, "why the check is statistical")."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from amx_export.decoder_io import describe, full_pass_feeds
from amx_export.graph_passes.cleanup import CleanupPass
from amx_export.graph_passes.emulate import EmulatePass
from amx_export.graph_passes.pipeline import Options, rewrite
from amx_export.layer_check import expose_layers
from tests.test_real_model import CHECKED_LAYERS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fmt", ["amxfp4", "mxfp4", "nvfp4"])
def test_custom_ops_on_smollm2_equal_numpy_and_emulation(smollm2_onnx, ort_library, fmt):
    model = ir.load(smollm2_onnx)
    rewrite(model, Options(format=fmt))
    layers = expose_layers(model, CHECKED_LAYERS)
    native_bytes = ir.to_proto(model).SerializeToString()
    EmulatePass()(model)
    CleanupPass()(model)
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(ort_library))
    native = ort.InferenceSession(native_bytes, options)
    emulated = ort.InferenceSession(ir.to_proto(model).SerializeToString())
    names = [o.name for o in native.get_outputs()]
    for rows in (1, 24):  # the packed small-m kernel, then the float panel path
        ids = np.random.default_rng(rows).integers(0, 49152, (1, rows)).astype(np.int64)
        feeds = full_pass_feeds(describe(native), ids)
        got = dict(zip(names, native.run(None, feeds), strict=True))
        for layer in layers:
            assert layer.error(got[layer.x], got[layer.y]) <= 1e-4, (fmt, rows, layer.name)
        reference = emulated.run(["logits"], feeds)[0].ravel().astype(np.float64)
        logits = got["logits"].ravel().astype(np.float64)
        cosine = logits @ reference / np.linalg.norm(logits) / np.linalg.norm(reference)
        # NVFP4 is the most sensitive: its activation tensor scale g is the tensor's amax, so a
        # last-bit difference in one value moves every block scale of the layer
        assert cosine > (0.98 if fmt == "nvfp4" else 0.999), (fmt, rows, cosine)
        agree = np.mean(
            got["logits"].argmax(-1) == reference.reshape(got["logits"].shape).argmax(-1)
        )
        if fmt != "nvfp4":  # random tokens give near-flat logits: NVFP4's argmax is fragile
            assert agree >= 0.9, (fmt, rows, agree)
