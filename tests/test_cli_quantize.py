"""`python -m amx_export MODEL.onnx` as a user runs it: outputs, summary, and bad input."""

import json
import subprocess
import sys

import onnx
import pytest
import tiny_models


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "amx_export", *map(str, args)],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "block.onnx"
    onnx.save(tiny_models.attention_block(), path)
    return path


def test_default_output_summary_and_report(model_path, tmp_path):
    report = tmp_path / "report.json"
    result = cli(model_path, "--report", report)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "block.amx.onnx"
    assert out.exists()
    onnx.checker.check_model(str(out))
    assert "layers rewritten" in result.stdout and "language-model head" in result.stdout
    data = json.loads(report.read_text())
    assert data["layers_quantized"] == 4 and data["bits_per_weight"] == 4.5
    assert data["layers_skipped"] == [
        {
            "name": "lm_head",
            "reason": "language-model head, named lm_head (kept in full precision)",
            "weight": "lm_head.weight",
        }
    ]
    assert data["weight_bytes_before"] == 4 * 64 * 64 * 4


def test_running_on_its_own_output_changes_nothing(model_path, tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert cli(model_path, "-o", first, "--attention").returncode == 0
    result = cli(first, "-o", second, "--attention")
    assert result.returncode == 0, result.stderr
    assert "nothing to change" in result.stdout
    assert sum(n.op_type == "Quantize" for n in onnx.load(first).graph.node) == 4
    assert onnx.load(first).graph == onnx.load(second).graph


def _assert_clean_failure(result, *needles, folder=None):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr
    if folder is not None:
        assert not list(folder.glob("*.amx.onnx")) and not list(folder.glob(".amx-export-*"))


def test_missing_file(tmp_path):
    _assert_clean_failure(cli(tmp_path / "nope.onnx"), "nope.onnx: no such file", folder=tmp_path)


def test_not_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model\n" * 10)
    _assert_clean_failure(cli(bad), "bad.onnx: not an ONNX model", folder=tmp_path)


def test_no_linear_layer(tmp_path):
    proto = tiny_models.attention_block()
    keep = [n for n in proto.graph.node if n.name in ("qk",)]
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    proto.graph.ClearField("initializer")
    proto.graph.ClearField("input")
    proto.graph.ClearField("output")
    from onnx import TensorProto, helper

    for name in ("q", "kT"):
        proto.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    proto.graph.output.append(helper.make_tensor_value_info("s0", TensorProto.FLOAT, None))
    path = tmp_path / "nolinear.onnx"
    onnx.save(proto, path)
    _assert_clean_failure(cli(path), "no linear layer to quantize", folder=tmp_path)


def test_weight_not_constant(tmp_path):
    proto = tiny_models.gemm(trans_a=0, trans_b=0)
    proto.graph.ClearField("initializer")
    from onnx import TensorProto, helper

    proto.graph.input.append(helper.make_tensor_value_info("B", TensorProto.FLOAT, [48, 24]))
    proto.graph.input.append(helper.make_tensor_value_info("C", TensorProto.FLOAT, [24]))
    path = tmp_path / "gemm.onnx"
    onnx.save(proto, path)
    _assert_clean_failure(cli(path), "Gemm weight B is not a constant", folder=tmp_path)


def test_unknown_format(model_path):
    result = cli(model_path, "--format", "int4")
    assert result.returncode == 2 and "invalid choice: 'int4'" in result.stderr


def test_unwritable_output(model_path, tmp_path):
    _assert_clean_failure(
        cli(model_path, "-o", tmp_path / "missing" / "x.onnx"), "does not exist", folder=tmp_path
    )
    _assert_clean_failure(cli(model_path, "-o", tmp_path), "is a directory", folder=tmp_path)


def test_emulate_runs_in_stock_onnxruntime(model_path, tmp_path):
    import numpy as np
    import onnxruntime as ort

    out = tmp_path / "emulated.onnx"
    result = cli(model_path, "--emulate", "--attention", "-o", out)
    assert result.returncode == 0, result.stderr
    proto = onnx.load(out)
    assert all(n.domain == "" for n in proto.graph.node)
    assert "amx" not in {o.domain for o in proto.opset_import}
    x = np.random.default_rng(0).standard_normal((2, 5, 64)).astype(np.float32)
    fp = ort.InferenceSession(model_path).run(None, {"x": x})[0]
    amx = ort.InferenceSession(out).run(None, {"x": x})[0]
    cosine = np.sum(fp * amx) / np.linalg.norm(fp) / np.linalg.norm(amx)
    assert 0.95 < cosine < 1.0  # quantized, close but not equal


def test_target_tensorrt(model_path, tmp_path):
    out, report = tmp_path / "trt.onnx", tmp_path / "report.json"
    result = cli(model_path, "--target", "tensorrt", "--attention", "-o", out, "--report", report)
    assert result.returncode == 0, result.stderr
    assert "target" in result.stdout and "tensorrt" in result.stdout
    assert json.loads(report.read_text())["target"] == "tensorrt"
    proto = onnx.load(out)
    assert {p.key: p.value for p in proto.metadata_props}["amx_export.target"] == "tensorrt"
    codes = [t for t in proto.graph.initializer if t.name.endswith(".codes")]
    assert codes and all(t.data_type == onnx.TensorProto.INT32 for t in codes)
    again = cli(out, "--target", "tensorrt", "--attention", "-o", tmp_path / "again.onnx")
    assert again.returncode == 0 and "nothing to change" in again.stdout
    _assert_clean_failure(cli(out, "-o", tmp_path / "back.onnx"), "already in the TensorRT form")


def test_emulate_with_target_tensorrt_refused(model_path, tmp_path):
    result = cli(model_path, "--emulate", "--target", "tensorrt")
    _assert_clean_failure(
        result, "--emulate and --target tensorrt exclude each other", folder=tmp_path
    )
    assert len(result.stderr.strip().splitlines()) == 1
