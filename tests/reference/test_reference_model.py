"""The PyTorch reference computes exactly what the rewritten ONNX graph computes."""

import contextlib
import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from amx_export import formats
from amx_export.cli import main
from amx_export.decoder_io import describe, full_pass_feeds
from amx_export.export import export_causal_lm, tiny_llama
from amx_export.reference import FakeQuantLinear, QuantConfig, logits, quantized_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = tiny_llama()
    path = tmp_path_factory.mktemp("ref") / "tiny.onnx"
    return model, export_causal_lm(model, path)


@pytest.fixture(scope="module")
def tiny_sdpa(tmp_path_factory):
    """A model exported through torch's SDPA decomposition: Q and K are each multiplied by
    sqrt(scale) before Q·Kᵀ, as in other exporters' graphs. head_dim 32: sqrt(1/sqrt(32)) is
    no power of two, so quantizing the scaled Q and K would round differently."""
    model = tiny_llama(hidden=128)
    path = export_causal_lm(model, tmp_path_factory.mktemp("sdpa") / "tiny.onnx", attention="sdpa")
    model.config._attn_implementation = "eager"
    return model, path


def _emulated_logits(path, tmp_path, ids, extra):
    out = tmp_path / "tiny.amx.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([str(path), "--emulate", "-o", str(out), *extra]) == 0
    session = ort.InferenceSession(out)
    return session.run(["logits"], full_pass_feeds(describe(session), ids))[0]


@pytest.mark.parametrize("fmt", formats.names())
@pytest.mark.parametrize("attention", [False, True], ids=["linears", "attention"])
def test_reference_equals_emulated_onnx(tiny, tmp_path, fmt, attention):
    model, path = tiny
    # 70 positions: P·V reduces over 70 keys, not a multiple of 32
    ids = np.random.default_rng(0).integers(0, 256, (2, 70)).astype(np.int64)
    extra = ["--format", fmt] + (["--attention"] if attention else [])
    got = _emulated_logits(path, tmp_path, ids, extra)
    ref = logits(quantized_model(model, QuantConfig(format=fmt, attention=attention)), ids)
    full = logits(model, ids).numpy()
    ref = ref.numpy()
    # same codes everywhere: only float32 summation order differs
    assert np.abs(got - ref).max() <= 2e-6 * np.abs(ref).max()
    assert np.abs(full - ref).mean() > 100 * np.abs(got - ref).mean()


@pytest.mark.parametrize("fmt", ["amxfp4", "mxfp4", "nvfp4"])
def test_reference_equals_emulated_sdpa_export_with_attention(tiny_sdpa, tmp_path, fmt):
    """The pass quantizes Q and K before the sqrt(scale) Muls, where the reference does."""
    model, path = tiny_sdpa
    ids = np.random.default_rng(0).integers(0, 256, (2, 70)).astype(np.int64)
    got = _emulated_logits(path, tmp_path, ids, ["--format", fmt, "--attention"])
    ref = logits(quantized_model(model, QuantConfig(format=fmt, attention=True)), ids).numpy()
    # sqrt(scale)^2 is not scale in float32: a last-bit difference before P is quantized
    assert np.abs(got - ref).max() <= 2e-6 * np.abs(ref).max()


@pytest.mark.parametrize(
    "config, flags",
    [
        (QuantConfig(weights_only=True), ["--weights-only"]),
        (QuantConfig(include_head=True), ["--include-head"]),
    ],
    ids=["weights-only", "include-head"],
)
def test_reference_options_match_quantize_flags(tiny, tmp_path, config, flags):
    model, path = tiny
    ids = np.random.default_rng(1).integers(0, 256, (1, 33)).astype(np.int64)
    got = _emulated_logits(path, tmp_path, ids, flags)
    ref = logits(quantized_model(model, config), ids).numpy()
    assert np.abs(got - ref).max() <= 2e-6 * np.abs(ref).max()


def test_fake_quant_linear_is_fake_quant_x_times_fake_quant_w(rng):
    linear = torch.nn.Linear(70, 24)
    layer = FakeQuantLinear(linear, "amxfp4", "amxfp4")
    x = torch.from_numpy(rng.standard_normal((3, 5, 70)).astype(np.float32))
    w = formats.dequantize(formats.quantize(linear.weight.detach().numpy()), k=70)
    xq = formats.fake_quant(x.numpy(), "amxfp4")
    expected = xq.astype(np.float64) @ w.T.astype(np.float64) + linear.bias.detach().numpy()
    got = layer(x).detach().numpy()
    assert np.abs(got - expected).max() < 1e-5
    assert "weight=amxfp4, act=amxfp4" in repr(layer)


def test_quantized_model_leaves_the_original_alone():
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantized_model(model, "mxfp4")
    linears = [m for m in quantized.modules() if isinstance(m, FakeQuantLinear)]
    assert len(linears) == 14  # 2 layers x 7; the head is kept
    assert isinstance(quantized.lm_head, torch.nn.Linear)
    assert not any(isinstance(m, FakeQuantLinear) for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
