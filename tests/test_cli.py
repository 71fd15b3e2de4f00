"""The command line as a user runs it."""

import re
import subprocess
import sys


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "amx_export", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "formats" in result.stdout and "AMXFP4" in result.stdout


def test_formats_table_shows_amxfp4_ahead_of_mxfp4():
    result = run_cli("formats", "--rows", "64", "--cols", "1024")
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if cells and cells[0] in ("amxfp4", "amxfp4-e4m3", "amxfp4-e8m0", "mxfp4", "nvfp4"):
            rows[cells[0]] = cells
    assert set(rows) == {"amxfp4", "amxfp4-e4m3", "amxfp4-e8m0", "mxfp4", "nvfp4"}
    assert rows["amxfp4"][3] == "4.50" and rows["mxfp4"][3] == "4.25"
    assert float(rows["amxfp4"][4]) < float(rows["mxfp4"][4])


def test_unknown_word_is_taken_as_a_model_path():
    result = run_cli("no-such-command")  # python -m amx_export MODEL.onnx is the default
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no-such-command: no such file"
