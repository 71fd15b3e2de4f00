"""torch and transformers are an extra: the CLI runs without them, and a command that needs
them says in one line which extra to install. A sitecustomize on PYTHONPATH makes them
unimportable in the child process (tests/test_wheel.py does the same in a venv that never had
them)."""

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import tiny_models

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "transformers", "gguf", "accelerate", "gensim", "matplotlib")
SHIM = f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None  # import fails\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    shim = tmp_path_factory.mktemp("no-torch")
    (shim / "sitecustomize.py").write_text(SHIM)
    env = {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{ROOT}"}

    def run(*args, cwd):
        return subprocess.run(
            [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )

    return run


def test_the_shim_blocks_torch(run, tmp_path):
    result = run("-c", "import torch", cwd=tmp_path)
    assert result.returncode == 1 and "ModuleNotFoundError" in result.stderr


def test_help_and_the_rewrite_run_without_torch(run, tmp_path):
    help_ = run("-m", "amx_export", "--help", cwd=tmp_path)
    assert help_.returncode == 0 and "rewrite a model" in help_.stdout, help_.stderr
    onnx.save(tiny_models.mlp(), tmp_path / "mlp.onnx")
    rewrite = run("-m", "amx_export", "mlp.onnx", "-o", "mlp.amx.onnx", cwd=tmp_path)
    assert rewrite.returncode == 0, rewrite.stderr
    ops = [(n.domain, n.op_type) for n in onnx.load(tmp_path / "mlp.amx.onnx").graph.node]
    assert ops.count(("amx", "MatMul")) == 2


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [
        (["export", "smollm2", "-o", "x.onnx"], "torch", "torch"),
        (["reference", "smollm2"], "torch", "torch"),
    ],
)
def test_a_command_that_needs_the_extra_names_it(run, tmp_path, argv, module, extra):
    result = run("-m", "amx_export", *argv, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: `{argv[0]}` needs {module}, which is not installed: "
        f"pip install 'amx-export[{extra}]'"
    ]


def test_another_missing_module_stays_an_internal_error():
    from amx_export.errors import missing_extra

    assert missing_extra(ModuleNotFoundError("no", name="onnx_ir.passes"), "quantize") is None
    error = missing_extra(ModuleNotFoundError("no", name="matplotlib.pyplot"), "eval")
    assert str(error) == (
        "`eval` needs matplotlib, which is not installed: pip install 'amx-export[eval]'"
    )
