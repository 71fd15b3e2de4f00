"""The main command on graphs made by the exporters users have (scripts/exporter_models.sh):
Optimum with past key values (opset 18 and 14, and the merged If decoder), Optimum's BERT
plain and optimized (com.microsoft Attention), a sequence classifier, onnxruntime-genai's
builder (fp32, fp32 with one gate-up MatMul, fp16, int4) and TorchScript exports at opset 14
and 17.

For each: the layers rewritten and every layer left with its reason; the rewritten model runs
in onnxruntime on the custom ops and as the emulation; every amx.MatMul of the custom-op
model is exact on the activations it was fed (fake_quant(X) @ dequant(W)ᵀ); the custom ops
and the emulation agree where no activation rounding can amplify float32 order (weights
only); and the genai folder runs in onnxruntime-genai (test_genai_folder.py).
"""

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from amx_export.cli import main
from amx_export.layer_check import TOLERANCE, expose_layers
from amx_export.ort import model_session

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("EXPORTER_MODELS", ROOT / "build" / "exporter-models"))
sys.path.insert(0, str(Path(__file__).parent))
from make_models import _feeds  # noqa: E402  (the inputs the fixtures were checked with)

HEAD = "language-model head, named lm_head (kept in full precision)"
ATTENTION = "q/k/v projections fused into com.microsoft.Attention"
# fixture -> (layers rewritten, {reason of every layer left: how many})
EXPECTED = {
    "optimum-llama": (14, {HEAD: 1}),
    "optimum-llama-opset14": (14, {HEAD: 1}),
    "optimum-llama-merged": (28, {HEAD: 2}),
    "optimum-bert": (12, {}),
    "optimum-bert-o2": (6, {ATTENTION: 2}),
    "optimum-bert-o3": (6, {ATTENTION: 2}),
    "optimum-bert-cls": (14, {}),  # the classifier is no LM head: rewritten like the rest
    "genai-llama-fp32": (10, {HEAD: 1}),
    "genai-llama-fp32-fused": (8, {HEAD: 1}),  # one gate_up_proj MatMul per layer
    "genai-llama-fp16": (14, {HEAD: 1}),
    "torchscript-llama-opset14": (14, {HEAD: 1}),
    "torchscript-llama-opset17": (14, {HEAD: 1}),
}


def fixture_path(name: str) -> Path:
    info = MODELS / name / "fixture.json"
    if not info.is_file():
        reason = f"{MODELS / name} not made (./scripts/exporter_models.sh; scripts/test.sh runs it)"
        if os.environ.get("AMX_REQUIRE_NATIVE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return MODELS / json.loads(info.read_text())["model"]


def quantize(path: Path, out: Path, *flags) -> tuple[int, dict, str]:
    report = out.with_suffix(".json")
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main([str(path), "-o", str(out), "--report", str(report), *flags])
    summary = json.loads(report.read_text()) if report.exists() else {}
    return code, summary, stderr.getvalue()


def inputs(path: Path, session) -> dict:
    genai = path.parent / "genai_config.json"
    head = json.loads(genai.read_text())["model"]["decoder"]["head_size"] if genai.exists() else 0
    ids = np.array([[5, 17, 42, 9, 100, 3, 77]], np.int64)
    feeds = _feeds(session, ids, None, use_cache=False, head_dim=head)
    return feeds


def run(model: ir.Model, path: Path, native: bool) -> tuple[list, list[str]]:
    session, _ = model_session(model, str(path), native=native)
    names = [o.name for o in session.get_outputs()]
    return session.run(None, inputs(path, session)), names


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rewrite_runs_and_every_layer_is_exact(name, tmp_path):
    path = fixture_path(name)
    rewritten, skipped = EXPECTED[name]
    code, summary, stderr = quantize(path, tmp_path / "w4a4.onnx")
    assert code == 0, stderr
    assert summary["layers_quantized"] == rewritten
    reasons = [s["reason"] for s in summary["layers_skipped"]]
    assert {r: reasons.count(r) for r in reasons} == skipped
    if name.startswith("genai"):  # com.microsoft ops in the default domain
        assert "fails onnx.checker" in stderr and summary["input_checker_error"]
    model = ir.load(tmp_path / "w4a4.onnx")
    layers = expose_layers(model)
    if name != "optimum-llama-merged":  # its layers are inside the If: checked below instead
        assert len(layers) == rewritten
    results, names = run(model, path, native=True)
    values = dict(zip(names, results, strict=True))
    for layer in layers:
        error = layer.error(values[layer.x].astype(np.float32), values[layer.y])
        assert error <= (1e-2 if "fp16" in name else TOLERANCE), (layer.name, error)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_custom_ops_equal_the_emulation_weights_only(name, tmp_path):
    path = fixture_path(name)
    code, _, stderr = quantize(path, tmp_path / "w4.onnx", "--weights-only")
    assert code == 0, stderr
    custom, _ = run(ir.load(tmp_path / "w4.onnx"), path, native=True)
    emulated, _ = run(ir.load(tmp_path / "w4.onnx"), path, native=False)
    original = ort.InferenceSession(str(path))
    reference = original.run(None, inputs(path, original))[0]
    scale = float(np.abs(reference).max())
    tolerance = 2e-3 if "fp16" in name else 1e-4
    assert np.abs(custom[0].astype(np.float64) - emulated[0]).max() <= tolerance * scale
    # 4-bit weights: near the original, far from noise
    cosine = np.sum(custom[0] * reference) / np.linalg.norm(custom[0]) / np.linalg.norm(reference)
    assert cosine > 0.9, cosine


def test_int4_genai_model_is_refused_with_what_it_is(tmp_path):
    code, _, stderr = quantize(fixture_path("genai-llama-int4"), tmp_path / "x.onnx")
    assert code == 2
    expected = "no linear layer to quantize (11 already quantized (com.microsoft.MatMulNBits))"
    assert expected in stderr


def test_attention_quantizes_only_the_softmax_matmuls(tmp_path):
    """Optimum's rotary embedding (inv_freq @ positions) is no attention matmul."""
    code, summary, stderr = quantize(
        fixture_path("optimum-llama"), tmp_path / "a.onnx", "--attention"
    )
    assert code == 0, stderr
    operands = summary["attention_operands_quantized"]
    assert sorted(operands) == [f"/model/layers.{i}/self_attn/MatMul{s}"
                                for i in (0, 1) for s in ("", "_1")]  # fmt: skip
    assert not any("rotary" in m for m in operands)
    # Q·Kᵀ: Q and Kᵀ before the exporter's sqrt(scale) Muls
    assert operands["/model/layers.0/self_attn/MatMul"] == [
        "/model/layers.0/self_attn/Add_output_0",
        "/model/layers.0/self_attn/Transpose_3_output_0",
    ]


def test_attention_inside_fused_ops_is_said(tmp_path):
    """Optimum's O2 BERT computes attention inside com.microsoft Attention: nothing to
    quantize, and the summary says so rather than nothing."""
    code, summary, stderr = quantize(
        fixture_path("optimum-bert-o2"), tmp_path / "a.onnx", "--attention"
    )
    assert code == 0, stderr
    assert summary["attention_matmuls_quantized"] == 0 and summary["attention_none_found"]


@pytest.mark.parametrize(
    "name", ["optimum-llama", "optimum-llama-opset14", "torchscript-llama-opset14",
             "torchscript-llama-opset17"],
)  # fmt: skip
def test_the_rewrite_removes_the_kv_copies_of_gqa(name, tmp_path):
    """These exporters repeat K and V for the query heads (Unsqueeze, Expand, Reshape) and
    lose head counts to shape inference (Optimum's Q behind a computed Reshape target,
    TorchScript's K behind the cache Concat): the rewrite still groups both products of each
    layer and leaves no repeat, and the grouping alone keeps the fixture's outputs (float32
    summation order apart)."""
    from amx_export.graph_passes.cleanup import CleanupPass
    from amx_export.graph_passes.grouped_attention import GroupedAttentionPass
    from amx_export.graph_passes.shapes import InferShapesPass

    grouped = ir.load(fixture_path(name))
    InferShapesPass()(grouped)
    assert GroupedAttentionPass()(grouped).modified
    CleanupPass()(grouped)
    expected, names = run(ir.load(fixture_path(name)), fixture_path(name), native=False)
    actual, _ = run(grouped, fixture_path(name), native=False)
    for output, want, got in zip(names, expected, actual, strict=True):
        scale = float(np.abs(want).max()) or 1.0
        assert np.abs(got - want).max() <= 1e-5 * scale, output
    out = tmp_path / "model.onnx"
    code, summary, stderr = quantize(fixture_path(name), out)
    assert code == 0, stderr
    model = ir.load(out)
    layers = sum(1 for node in model.graph if node.op_type == "Softmax")
    assert layers == 2 and len(summary["attention_grouped"]) == 2 * layers
    repeats = [n for n in model.graph if n.op_type == "Expand" and n.inputs[0].producer() is not
               None and n.inputs[0].producer().op_type == "Unsqueeze"]  # fmt: skip
    assert repeats == []


@pytest.mark.parametrize(
    "name", ["optimum-llama", "optimum-llama-opset14", "torchscript-llama-opset14",
             "torchscript-llama-opset17"],
)  # fmt: skip
def test_the_rewrite_fuses_the_rotary_embeddings(name, tmp_path):
    """These exporters slice the halves at x.shape[-1] // 2 computed in the graph, and their
    cos/sin tables lose the batch (and TorchScript's the sequence) symbols: the rotary pass
    still fuses Q and K of each layer, and the fused graph alone gives the fixture's outputs
    (one float32 rounding apart) on a batch of two rows at different positions."""
    from amx_export.graph_passes.cleanup import CleanupPass
    from amx_export.graph_passes.rotary import FuseRotaryPass
    from amx_export.graph_passes.shapes import InferShapesPass

    path = fixture_path(name)
    fused = ir.load(path)
    InferShapesPass()(fused)
    rotary = FuseRotaryPass()
    assert rotary(fused).modified and len(rotary.fused) == 4
    CleanupPass()(fused)
    assert not any(node.op_type == "Neg" for node in fused.graph)
    results = []
    for model in (ir.load(path), fused):
        session, _ = model_session(model, str(path), native=False)
        ids = np.array([[5, 17, 42, 9, 100, 3, 77], [8, 1, 250, 6, 31, 2, 4]], np.int64)
        feeds = _feeds(session, ids, None, use_cache=False)
        if "position_ids" in feeds:
            feeds["position_ids"] = np.array([np.arange(7), np.arange(40, 47)], np.int64)
        results.append(session.run(None, feeds))
    for want, got in zip(*results, strict=True):
        scale = float(np.abs(want).max()) or 1.0
        assert np.abs(got - want).max() <= 1e-5 * scale
    code, summary, stderr = quantize(path, tmp_path / "model.onnx")
    assert code == 0, stderr
    assert len(summary["rotary_fused"]) == 4
