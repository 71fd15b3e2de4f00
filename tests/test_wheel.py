"""The wheel as a user gets it: `pip wheel .` builds the native libraries into it (CPU kernels
only here, to keep the test short), and installed into a fresh venv with no source checkout
and no torch it imports, rewrites a model, runs it on the custom ops with the emulation's
numbers, and says in one line what it cannot do there."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest
import tiny_models

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = {"libamx_kernels.so", "libamx_ort.so"}

pytestmark = pytest.mark.slow

SMOKE = """
import warnings
import numpy as np
import onnxruntime
import amx_export
from amx_export.errors import EmulationWarning
from amx_export.ort import EMULATED, NATIVE, session
from amx_export.plugins import library_path
warnings.simplefilter("error", EmulationWarning)  # the custom ops, or a failure
assert "site-packages" in amx_export.__file__, amx_export.__file__
onnxruntime.SessionOptions().register_custom_ops_library(library_path("ort"))  # a str
x = np.random.default_rng(0).standard_normal((2, 5, 64)).astype(np.float32)
native, how = session("mlp.amx.onnx")
emulated, how_emulated = session("mlp.amx.onnx", native=False)
assert (how, how_emulated) == (NATIVE, EMULATED), (how, how_emulated)
a, b = native.run(None, {"x": x})[0], emulated.run(None, {"x": x})[0]
print("max difference", float(np.abs(a - b).max()), "scale", float(np.abs(b).max()))
"""


def _run(command, cwd, timeout=600):
    # no PYTHONPATH: nothing from the checkout may leak into the venv's runs
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMX_EXPORT_LIB_DIR")}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = [
        sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out),
        "-C", "cmake.define.AMX_CUDA=OFF", "-C", f"build-dir={ROOT / 'build' / 'wheel-smoke'}",
    ]  # fmt: skip
    result = _run(build, out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = out.glob("amx_export-*.whl")
    return path


def test_wheel_holds_the_package_and_its_libraries_only(wheel):
    with zipfile.ZipFile(wheel) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert {n.split("/")[0] for n in names} == {"amx_export", "amx_export-0.1.0.dist-info"}
    libraries = {Path(n).name: i.file_size for n, i in zip(names, infos, strict=True)
                 if n.startswith("amx_export/plugins/lib/")}  # fmt: skip
    assert set(libraries) == LIBRARIES  # CPU only: no libamx_trt.so
    assert all(20_000 < size < 2_000_000 for size in libraries.values()), libraries
    junk = [n for n in names if n.endswith((".pyc", ".o", ".a")) or "CMakeFiles" in n]
    assert junk == []
    assert "amx_export/graph_passes/pipeline.py" in names
    assert wheel.stat().st_size < 1_000_000


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    folder = tmp_path_factory.mktemp("venv") / "venv"
    assert _run([sys.executable, "-m", "venv", str(folder)], folder.parent).returncode == 0
    result = _run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                  folder.parent)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder / "bin"


def test_installed_wheel_rewrites_and_runs_the_custom_ops(venv, tmp_path):
    onnx.save(tiny_models.mlp(), tmp_path / "mlp.onnx")
    cli = str(venv / "amx-export")
    help_ = _run([cli, "--help"], tmp_path)
    assert help_.returncode == 0 and "rewrite a model" in help_.stdout, help_.stderr
    rewrite = _run([cli, "mlp.onnx", "-o", "mlp.amx.onnx"], tmp_path)
    assert rewrite.returncode == 0, rewrite.stderr
    assert any(n.domain == "amx" for n in onnx.load(tmp_path / "mlp.amx.onnx").graph.node)
    smoke = _run([str(venv / "python"), "-c", SMOKE], tmp_path)
    assert smoke.returncode == 0, smoke.stderr
    difference, scale = (float(w) for w in smoke.stdout.split()[2::2])
    assert difference <= 1e-6 * scale


def test_installed_wheel_names_what_it_cannot_do(venv, tmp_path):
    assert _run([str(venv / "python"), "-c", "import torch"], tmp_path).returncode == 1
    export = _run([str(venv / "amx-export"), "export", "smollm2", "-o", "x.onnx"], tmp_path)
    assert export.returncode == 2
    assert export.stderr.splitlines() == [
        "error: `export` needs torch, which is not installed: pip install 'amx-export[torch]'"
    ]
    build = _run([str(venv / "amx-export"), "build"], tmp_path)
    assert build.returncode == 2 and len(build.stderr.splitlines()) == 1
    assert "carries the native libraries already" in build.stderr
