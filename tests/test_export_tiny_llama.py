"""A real exporter's graph: a small random Llama through torch.onnx, then the rewrite."""

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from amx_export.export import export_causal_lm, tiny_llama
from graph_passes.pipeline import Options, rewrite


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama") / "tiny_llama.onnx"
    return export_causal_lm(tiny_llama(), path)


def test_export_has_dynamic_batch_and_sequence(exported):
    session = ort.InferenceSession(exported)
    for shape in ((1, 5), (3, 17)):
        ids = np.random.default_rng(0).integers(0, 256, shape).astype(np.int64)
        assert session.run(None, {"input_ids": ids})[0].shape == (*shape, 256)


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
