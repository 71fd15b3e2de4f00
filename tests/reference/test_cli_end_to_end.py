"""export -> quantize -> reference -> check -> eval through the CLI, on a small Llama saved as
a transformers folder (random weights, SmolLM2's tokenizer), and the stock polygraphy CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amx_export.cli import main
from amx_export.comparison import load_run

TEXT = (
    "Anarchism is a political philosophy that advocates self-governed societies based on "
    "voluntary institutions. These are often described as stateless societies. "
) * 12


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from transformers import AutoTokenizer

    from amx_export.export import tiny_llama
    from amx_export.models import SMOLLM2_GGUF, smollm2_dir

    root = tmp_path_factory.mktemp("e2e")
    folder = root / "tiny-llama"
    tiny_llama(vocab=49152).save_pretrained(folder)
    AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF).save_pretrained(folder)
    (root / "text.txt").write_text(TEXT)
    return root


@pytest.fixture(scope="module")
def exported(workdir):
    onnx = workdir / "tiny.onnx"
    assert main(["export", str(workdir / "tiny-llama"), "-o", str(onnx)]) == 0
    amx = workdir / "tiny.amx.onnx"
    assert main([str(onnx), "-o", str(amx)]) == 0  # amx nodes: check emulates them
    emulated = workdir / "tiny.emulated.onnx"
    assert main([str(onnx), "--emulate", "-o", str(emulated)]) == 0
    # the stock polygraphy CLI takes the reference's inputs (input_ids) as they are: logits only
    plain = workdir / "tiny.no-cache.onnx"
    assert main(["export", str(workdir / "tiny-llama"), "--no-cache", "-o", str(plain)]) == 0
    plain_emulated = workdir / "tiny.no-cache.emulated.onnx"
    assert main([str(plain), "--emulate", "-o", str(plain_emulated)]) == 0
    return onnx, amx, emulated, plain_emulated


@pytest.fixture(scope="module")
def reference(workdir, exported):
    ref = workdir / "ref.json"
    args = [
        "reference",
        str(workdir / "tiny-llama"),
        "-o",
        str(ref),
        "--text",
        str(workdir / "text.txt"),
        "--sequences",
        "3",
        "--length",
        "40",
    ]
    assert main(args) == 0
    return ref


def test_reference_writes_fake_quant_full_precision_and_inputs(reference):
    name, fq = load_run(reference, "reference")
    fp_name, fp = load_run(reference.with_name("ref.fp.json"), "full precision")
    assert (name, fp_name) == ("amx-reference:amxfp4", "amx-reference:fp")
    assert len(fq) == len(fp) == 3
    assert fq[0]["logits"].shape == (1, 40, 49152)
    assert np.abs(fq[0]["logits"] - fp[0]["logits"]).mean() > 1e-3
    inputs = json.loads(reference.with_name("ref.inputs.json").read_text())
    assert len(inputs) == 3


@pytest.mark.parametrize("form", [1, 2], ids=["amx-nodes", "emulated"])
def test_check_passes_for_the_rewritten_model(exported, reference, capsys, form):
    assert main(["check", str(exported[form]), "--reference", str(reference)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "PASS: mean |error|" in out and "onnxruntime vs full precision" in out
    # its own summary, polygraphy's log kept for --verbose: no [E] (nor [I]) line
    assert "[E]" not in captured.out + captured.err and "[I]" not in out
    assert "│ logits │" in out and "3/3 │    PASS │" in out
    if form == 1:  # amx nodes: each layer checked on its own inputs
        assert "PASS: 14 amx.MatMul layers" in out
    else:
        assert "an emulated model?): skipped" in out


def test_layer_check_catches_numbers_that_are_not_the_format(exported, reference, capsys,
                                                             monkeypatch):  # fmt: skip
    from amx_export import layer_check

    # expect the activations unquantized: every W4A4 layer must now disagree
    monkeypatch.setattr(layer_check.formats, "fake_quant", lambda x, fmt: x)
    assert main(["check", str(exported[1]), "--reference", str(reference)]) == 1
    assert "FAIL: 14 amx.MatMul layers" in capsys.readouterr().out


def test_check_fails_when_the_numbers_are_not_the_reference(exported, reference, capsys):
    # the unquantized model is as far from the reference as the quantization error itself
    assert main(["check", str(exported[0]), "--reference", str(reference)]) == 1
    out = capsys.readouterr().out
    assert "above --atol" in out and out.rstrip().splitlines()[-2].endswith("for logits")
    assert "0/3 │    FAIL │" in out and "inputs above the bound on their own: 0 (" in out


def test_check_verbose_shows_polygraphy_log(exported, reference, capsys):
    assert main(["check", str(exported[1]), "--reference", str(reference), "--verbose",
                 "--no-layers"]) == 0  # fmt: skip
    assert "Accuracy Summary" in capsys.readouterr().out


def test_check_refuses_a_reference_of_another_format(workdir, exported, reference, capsys):
    mx = workdir / "tiny.mxfp4.onnx"
    assert main([str(exported[0]), "--format", "mxfp4", "-o", str(mx)]) == 0
    assert main(["check", str(mx), "--reference", str(reference)]) == 2
    assert "is a mxfp4 model but" in capsys.readouterr().err


def test_stock_polygraphy_cli_compares_against_the_reference(exported, reference):
    polygraphy = shutil.which("polygraphy", path=str(Path(sys.executable).parent))
    assert polygraphy is not None
    _, fq = load_run(reference, "reference")
    _, fp = load_run(reference.with_name("ref.fp.json"), "fp")
    atol = 0.5 * np.mean(
        [np.abs(a["logits"] - b["logits"]).mean() for a, b in zip(fq, fp, strict=True)]
    )
    base = [
        polygraphy,
        "run",
        str(exported[3]),
        "--onnxrt",
        "--load-inputs",
        str(reference.with_name("ref.inputs.json")),
        "--check-error-stat",
        "mean",
        "--check-average",
        "--rtol",
        "0",
        "--atol",
        str(atol),
    ]
    good = subprocess.run([*base, "--load-outputs", str(reference)], capture_output=True)
    assert good.returncode == 0, good.stdout.decode()[-2000:]
    bad = subprocess.run(
        [*base, "--load-outputs", str(reference.with_name("ref.fp.json"))], capture_output=True
    )
    assert bad.returncode != 0


def test_eval_writes_table_and_chart(workdir, exported, capsys):
    out = workdir / "eval"
    args = [
        "eval",
        str(workdir / "tiny-llama"),
        "--formats",
        "fp,amxfp4,mxfp4",
        "--text",
        str(workdir / "text.txt"),
        "--window",
        "32",
        "--max-tokens",
        "128",
        "--onnx",
        str(exported[0]),
        "-o",
        str(out),
        "--cache-dir",
        str(workdir / "cache"),
    ]
    assert main(args) == 0
    rows = json.loads((out / "perplexity.json").read_text())["rows"]
    assert [r["format"] for r in rows] == ["fp", "amxfp4", "mxfp4"]
    for row in rows:
        assert abs(row["onnx_gap"]) < 1e-4
        assert row["tokens"] == 4 * 31
    assert rows[0]["vs_fp"] == 1.0
    assert (out / "perplexity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| amxfp4 |" in (out / "perplexity.md").read_text()
    # a second run is served from the cache: same numbers, no window recomputed
    lines = (workdir / "cache" / "windows.jsonl").read_text().count("\n")
    assert main(args) == 0
    assert (workdir / "cache" / "windows.jsonl").read_text().count("\n") == lines
    assert json.loads((out / "perplexity.json").read_text())["rows"] == rows


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "no/such/folder"], "not a model folder"),
        (["eval", "smollm2", "--formats", "fp,int3"], "unknown int3"),
        (["eval", "smollm2", "--window", "64", "--max-tokens", "10"], "--max-tokens >= --window"),
        (["check", "missing.onnx", "--reference", "nope.json"], "no such reference file"),
        (["reference", "smollm2", "--inputs", "nope.json"], "no such inputs file"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_generate_finds_tokenizer_and_positions_from_the_export(exported, capsys):
    """`export` names its tokenizer source and longest sequence in the model's metadata, and
    the rewrite keeps them: `generate` needs no --tokenizer and refuses a too-long prompt."""
    _, amx, _, _ = exported
    assert main(["generate", str(amx), "--prompt", "Hello world", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("Hello world") and "3 new tokens" in out.err
    assert main(["generate", str(amx), "--prompt", "word " * 600]) == 2
    assert "512 positions (amx_export.max_positions)" in capsys.readouterr().err
