"""A real exporter's graph: a small random Llama through torch.onnx, then the rewrite, in both
forms (KV-cache decoder and logits only)."""

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from amx_export.decoder_io import describe, full_pass_feeds
from amx_export.graph_passes.pipeline import Options, rewrite


@pytest.fixture(params=[True, False], ids=["cache", "no-cache"])
def exported(request, tiny_export):
    return tiny_export("llama", cache=request.param)[1]


def test_export_has_dynamic_batch_and_sequence(exported):
    session = ort.InferenceSession(exported)
    io = describe(session)
    for shape in ((1, 5), (3, 17)):
        ids = np.random.default_rng(0).integers(0, 256, shape).astype(np.int64)
        assert session.run(["logits"], full_pass_feeds(io, ids))[0].shape == (*shape, 256)


def test_every_linear_but_the_head_rewritten(exported):
    model = ir.load(exported)
    outcome = rewrite(model, Options(attention=True))
    # 2 layers x (q, k, v, o, gate, up, down) = 14; the tied LM head is kept
    assert len(outcome.quantized) == 14
    skipped = [r for r in outcome.layers if r.status == "skipped"]
    head = "language-model head, named lm_head (kept in full precision)"
    assert [r.reason for r in skipped] == [head]
    assert len(outcome.attention_matmuls) == 4  # Q·Kᵀ and P·V in each layer
    kinds = {(n.domain, n.op_type) for n in model.graph}
    assert ("amx", "MatMul") in kinds and ("amx", "Quantize") in kinds
    assert sum(1 for n in model.graph if (n.domain, n.op_type) == ("", "MatMul")) == 5
    onnx.checker.check_model(ir.to_proto(model))
