"""session() runs the amx nodes on the custom ops or on the emulation, and is never silent
when it takes the emulation without being asked to: the library missing, or its kernels on
the portable tier (slower than the emulation there)."""

import contextlib
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny_models

from amx_export.cli import main
from amx_export.errors import EmulationWarning
from amx_export.ort import EMULATED, NATIVE, session

ROOT = Path(__file__).resolve().parents[2]
X = np.random.default_rng(0).standard_normal((1, 3, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def amx_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("choice")
    onnx.save(tiny_models.mlp(), folder / "mlp.onnx")
    out = folder / "mlp.amx.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([str(folder / "mlp.onnx"), "-o", str(out)]) == 0
    return out


@pytest.fixture
def no_library(tmp_path, monkeypatch):
    monkeypatch.setenv("AMX_EXPORT_LIB_DIR", str(tmp_path))  # an empty folder


def test_missing_library_warns_and_emulates(amx_model, no_library):
    with pytest.warns(EmulationWarning) as record:
        sess, how = session(amx_model)
    assert how == EMULATED and len(record) == 1
    message = str(record[0].message)
    assert "libamx_ort.so is not built" in message and "python -m amx_export build" in message
    assert sess.run(None, {"x": X})[0].shape == (1, 3, 40)


def test_asking_for_the_emulation_is_silent(amx_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert session(amx_model, native=False)[1] == EMULATED


def test_the_cli_prints_the_fallback_as_one_line(amx_model, no_library, monkeypatch, capsys):
    """Any command that opens a session: its warning is one `warning:` line on stderr."""
    from amx_export.commands import formats_table

    def run(args):
        session(amx_model)
        return 0

    monkeypatch.setattr(formats_table, "run", run)
    assert main(["formats"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: amx nodes run on the emulation")


CHILD = """
import sys, warnings
import numpy as np
from amx_export.ort import session
warnings.simplefilter("always")
sess, how = session(sys.argv[1])
x = np.random.default_rng(0).standard_normal((1, 3, 64)).astype(np.float32)
np.save(sys.argv[2], sess.run(None, {"x": x})[0])
print(how)
"""


def _child(model: Path, out: Path, isa: str | None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AMX_CPU_ISA", None)
    if isa:
        env["AMX_CPU_ISA"] = isa  # read once, when the library loads: a fresh process
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr, np.load(out)


def test_portable_tier_warns_and_emulates_with_the_same_numbers(ort_library, amx_model, tmp_path):
    how, err, emulated = _child(amx_model, tmp_path / "portable.npy", "portable")
    assert how == EMULATED
    assert "EmulationWarning" in err and "portable tier" in err
    how, err, native = _child(amx_model, tmp_path / "native.npy", None)
    assert how == NATIVE and "EmulationWarning" not in err
    np.testing.assert_allclose(native, emulated, rtol=1e-6, atol=1e-6 * np.abs(emulated).max())
