"""Where commands write when no output is named: under build/, never the current folder;
a rewrite beside its input, the emulation and the TensorRT form under their own names."""

from pathlib import Path

import onnx
import tiny_models

from amx_export.cli import build_parser, main


def test_defaults_are_under_build():
    parser = build_parser()
    assert parser.parse_args(["reference", "smollm2"]).output == Path("build/ref.json")
    assert parser.parse_args(["eval", "smollm2"]).output_dir == Path("build/eval")
    assert parser.parse_args(["export", "smollm2"]).output is None  # build/<name>.onnx in run


def test_rewrite_and_emulation_never_replace_each_other(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    onnx.save(tiny_models.mlp(), "mlp.onnx")
    assert main(["mlp.onnx"]) == 0
    assert main(["mlp.onnx", "--emulate"]) == 0
    assert main(["mlp.onnx", "--target", "tensorrt"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mlp.amx.emu.onnx", "mlp.amx.onnx", "mlp.amx.trt.onnx", "mlp.onnx",
    ]  # fmt: skip
    trt = onnx.load("mlp.amx.trt.onnx")
    assert {p.key: p.value for p in trt.metadata_props}["amx_export.target"] == "tensorrt"
    ops = {n.domain for n in onnx.load("mlp.amx.emu.onnx").graph.node}
    assert "amx" not in ops and "amx" in {n.domain for n in onnx.load("mlp.amx.onnx").graph.node}


def test_export_and_reference_write_under_build_by_default(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from amx_export.export import tiny_llama
    from amx_export.models import SMOLLM2_GGUF, smollm2_dir

    folder = tmp_path / "tiny"
    tiny_llama(layers=1, vocab=49152).save_pretrained(folder)
    AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF).save_pretrained(folder)
    (tmp_path / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 40)
    monkeypatch.chdir(tmp_path)
    assert main(["export", "tiny"]) == 0
    args = ["reference", "tiny", "--text", "text.txt", "--sequences", "2", "--length", "8"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == [
        "ref.fp.json", "ref.inputs.json", "ref.json", "tiny.onnx",
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "text.txt", "tiny"]
