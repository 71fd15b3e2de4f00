"""The main command on an onnxruntime-genai folder (the builder's fp32 Llama): the folder it
writes runs in onnxruntime-genai as it is, and a config it must not change stays as it was.

What og generates is held to the rewritten model itself: its greedy tokens, fed back in one
full-sequence onnxruntime call (no KV cache), are the argmax at every position; the
full-precision model generates other tokens, so a config still running it would fail.
"""

import json
import shutil
from pathlib import Path

import pytest
from genai_util import full_logits, og_greedy
from test_exporter_models import fixture_path, quantize

from amx_export.plugins import library_path

og = pytest.importorskip("onnxruntime_genai")

PROMPT = [5, 17, 42, 9, 100, 3, 77]
NEW_TOKENS = 24
TOKENIZER = ("tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="module")
def source():
    return fixture_path("genai-llama-fp32").parent


@pytest.fixture(scope="module")
def fp32_tokens(source):
    return og_greedy(source, PROMPT, NEW_TOKENS)


def config(folder):
    return json.loads((folder / "genai_config.json").read_text())


def held_to_the_model(folder, tokens, native=True):
    """og's tokens are the rewritten model's greedy choices given the same context."""
    logits = full_logits(folder, PROMPT + tokens[:-1], native=native)[len(PROMPT) - 1 :]
    assert list(logits.argmax(-1)) == tokens


@pytest.mark.parametrize("emulate", [False, True], ids=["custom-ops", "emulated"])
def test_another_folder_gets_a_config_og_runs(
    source, fp32_tokens, tmp_path, monkeypatch, emulate
):
    # og loads a custom-op library only from the model's folder or the current one: run it
    # from elsewhere than the checkout, where the built library lies
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "amx" / "model.onnx"
    out.parent.mkdir()
    code, summary, stderr = quantize(source / "model.onnx", out, *["--emulate"] * emulate)
    assert code == 0, stderr
    # every linear layer but the head: the packed q/k/v projection and the MLP's three
    names = [r["name"] for r in summary["layers"]]
    projections = ("attn/qkv_proj", "attn/o_proj", "mlp/gate_proj", "mlp/up_proj", "mlp/down_proj")
    expected = [f"/model/layers.{i}/{p}/MatMul" for i in (0, 1) for p in projections]
    assert names == expected
    assert [s["name"] for s in summary["layers_skipped"]] == ["/lm_head/MatMul"]
    assert summary["genai_config"]["action"] == "written"
    written, original = config(out.parent), config(source)
    options = written["model"]["decoder"].pop("session_options")
    original_options = original["model"]["decoder"].pop("session_options")
    assert written["model"]["decoder"].pop("filename") == "model.onnx"
    original["model"]["decoder"].pop("filename")
    assert written == original  # nothing else changed
    library = options.pop("custom_ops_library", None)
    assert options == original_options
    assert library == (None if emulate else "libamx_ort.so")
    copied = out.parent / "libamx_ort.so"
    assert copied.exists() != emulate
    if not emulate:
        assert copied.read_bytes() == Path(library_path("ort")).read_bytes()
    for name in TOKENIZER:
        assert (out.parent / name).read_bytes() == (source / name).read_bytes()
    tokens = og_greedy(out.parent, PROMPT, NEW_TOKENS)
    assert len(tokens) == NEW_TOKENS and tokens != fp32_tokens
    held_to_the_model(out.parent, tokens, native=not emulate)
    og_tokenizer = og.Tokenizer(og.Model(str(out.parent)))
    assert list(og_tokenizer.encode("The quick brown fox")) == list(
        og.Tokenizer(og.Model(str(source))).encode("The quick brown fox")
    )


def test_og_without_the_library_fails_naming_the_op(source, tmp_path):
    out = tmp_path / "model.onnx"
    assert quantize(source / "model.onnx", out)[0] == 0
    written = config(tmp_path)
    del written["model"]["decoder"]["session_options"]["custom_ops_library"]
    (tmp_path / "genai_config.json").write_text(json.dumps(written))
    with pytest.raises(RuntimeError, match="amx:MatMul.* is not a registered function/op"):
        og.Model(str(tmp_path))


@pytest.fixture
def folder(source, tmp_path):
    """A copy of the fixture folder, to rewrite beside its own model."""
    copy = tmp_path / "genai"
    shutil.copytree(source, copy)
    return copy


def test_beside_the_input_the_config_is_left_unless_asked(folder, fp32_tokens):
    before = (folder / "genai_config.json").read_bytes()
    out = folder / "model.amx.onnx"
    code, summary, stderr = quantize(folder / "model.onnx", out)
    assert code == 0, stderr
    assert (folder / "genai_config.json").read_bytes() == before
    assert summary["genai_config"]["action"] == "left as is"
    assert "--genai-config update" in summary["genai_config"]["detail"]
    assert og_greedy(folder, PROMPT, NEW_TOKENS) == fp32_tokens  # still the original model

    code, summary, stderr = quantize(folder / "model.onnx", out, "--genai-config", "update")
    assert code == 0, stderr
    assert summary["genai_config"]["action"] == "updated"
    assert config(folder)["model"]["decoder"]["filename"] == "model.amx.onnx"
    held_to_the_model(folder, og_greedy(folder, PROMPT, NEW_TOKENS))


def test_a_rerun_updates_its_config_and_keeps_edits(source, tmp_path):
    out = tmp_path / "model.onnx"
    assert quantize(source / "model.onnx", out, "--emulate")[0] == 0
    edited = config(tmp_path)
    edited["search"]["max_length"] = 64  # the user's own setting
    (tmp_path / "genai_config.json").write_text(json.dumps(edited))
    code, summary, stderr = quantize(source / "model.onnx", out)
    assert code == 0, stderr
    assert summary["genai_config"]["action"] == "updated"
    rerun = config(tmp_path)
    assert rerun["search"]["max_length"] == 64
    assert rerun["model"]["decoder"]["session_options"]["custom_ops_library"]
    # a second model into the same folder: its config runs the first, which exists
    code, summary, stderr = quantize(source / "model.onnx", tmp_path / "w4.onnx", "--weights-only")
    assert code == 0, stderr
    assert summary["genai_config"]["action"] == "left as is"
    assert config(tmp_path) == rerun


def test_tensorrt_form_and_off_write_no_config(source, tmp_path):
    code, summary, stderr = quantize(source / "model.onnx", tmp_path / "trt.onnx",
                                     "--target", "tensorrt")  # fmt: skip
    assert code == 0, stderr
    assert summary["genai_config"]["action"] == "not written"
    code, summary, stderr = quantize(source / "model.onnx", tmp_path / "m.onnx",
                                     "--genai-config", "off")  # fmt: skip
    assert code == 0, stderr
    assert summary["genai_config"] is None
    assert not (tmp_path / "genai_config.json").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ('{"model": {"type": "llama"}}', "not an onnxruntime-genai config"),
    ],
)
def test_a_bad_config_is_one_line_before_any_work(folder, tmp_path, text, message):
    (folder / "genai_config.json").write_text(text)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    code, _, stderr = quantize(folder / "model.onnx", out)
    assert code == 2
    assert stderr.count("\n") == 1  # before the checker warning too
    assert f"error: {folder / 'genai_config.json'}: {message}" in stderr
    assert list(out.parent.iterdir()) == []
    assert quantize(folder / "model.onnx", out, "--genai-config", "off")[0] == 0


def test_a_different_tokenizer_in_the_output_folder_is_refused(source, tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    code, _, stderr = quantize(source / "model.onnx", tmp_path / "model.onnx")
    assert code == 2
    assert f"{tmp_path / 'tokenizer.json'}: exists and differs from" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]


def test_the_packed_gate_up_variant_runs_in_og(tmp_path):
    """The builder's fuse_mlp_gate_up=true: one gate_up_proj MatMul per layer, rewritten."""
    source = fixture_path("genai-llama-fp32-fused").parent
    code, summary, stderr = quantize(source / "model.onnx", tmp_path / "model.onnx")
    assert code == 0, stderr
    names = [r["name"] for r in summary["layers"]]
    assert [n for n in names if "gate_up" in n] == [
        f"/model/layers.{i}/mlp/gate_up_proj/MatMul" for i in (0, 1)
    ]
    tokens = og_greedy(tmp_path, PROMPT, NEW_TOKENS)
    assert tokens != og_greedy(source, PROMPT, NEW_TOKENS)
    held_to_the_model(tmp_path, tokens)
