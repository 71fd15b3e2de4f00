"""README.md works exactly as written: every command block runs, in order, in a temporary
copy of the checkout, exits 0 and prints what the README shows (tests/readme_blocks.py has
the convention and its markers).

The temporary checkout links the repository's files and .venv (this interpreter's
environment) and has no build/ yet. What the README takes as given is put there first:
``model.onnx`` (the user's model: a small Llama's KV-cache export), and what the skipped
exporter commands would write, ``build/optimum-out/`` and ``build/genai/`` (the same tools'
models from scripts/exporter_models.sh), and a copy of the built native libraries
(AMX_EXPORT_LIB_DIR; the checkout's own lie in an ignored folder that is not linked). The
small model of small-model blocks is a 2-layer random Llama with a byte-level tokenizer
(258 tokens), saved as a transformers folder. At the end, every file the README's commands
wrote must be one that .gitignore covers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from readme_blocks import Block, blocks, missing_output, runnable

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MODELS = Path(os.environ.get("EXPORTER_MODELS", ROOT / "build" / "exporter-models"))
# placeholder in the checkout -> the exporter model that stands for it
EXPORTER_OUTPUTS = {"build/optimum-out": "optimum-llama", "build/genai": "genai-llama-fp32"}
NOT_LINKED = {".git", ".venv", "build", ".pytest_cache", ".ruff_cache", ".hypothesis"}
BLOCK_TIMEOUT = 300
LIB_COPY = Path("build", "readme-test-lib")  # the built libraries, copied into the checkout


def small_model(folder: Path) -> Path:
    """A 2-layer random Llama (tiny_llama) with a byte-level BPE tokenizer, no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from amx_export.export import tiny_llama

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    tiny_llama(vocab=len(fast)).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def checkout(folder: Path) -> Path:
    """The repository's top-level entries as links, .venv as this environment, no build/."""
    folder.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in NOT_LINKED:
            (folder / entry.name).symlink_to(entry)
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


def exporter_model(name: str) -> Path:
    folder = MODELS / name
    if not (folder / "fixture.json").is_file():
        reason = f"{folder} not made (./scripts/exporter_models.sh; scripts/test.sh runs it)"
        if os.environ.get("AMX_REQUIRE_NATIVE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


def run_block(block: Block, cwd: Path, model_dir: Path) -> subprocess.CompletedProcess:
    command = block.command(str(model_dir))
    interpreter = ["bash", "-e", "-o", "pipefail", "-s"]
    if block.lang == "python":
        interpreter = [str(cwd / ".venv" / "bin" / "python"), "-"]
    path = os.pathsep.join(p for p in (str(cwd), os.environ.get("PYTHONPATH")) if p)
    env = os.environ | {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    libraries = cwd / LIB_COPY
    if libraries.is_dir():
        env["AMX_EXPORT_LIB_DIR"] = str(libraries)
    return subprocess.run(
        interpreter, input=command, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=BLOCK_TIMEOUT,
    )  # fmt: skip


def written_files(folder: Path, before: set[Path]) -> list[Path]:
    """Files under ``folder`` that were not there before, not following the links."""
    found = []
    for path, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not (Path(path) / d).is_symlink()]
        found += [Path(path, f).relative_to(folder) for f in files]
    return sorted(set(found) - before)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Runs the README's blocks once: {block line: (block, result or None, seconds)}."""
    if not (ROOT / ".venv").exists() and not Path(sys.prefix, "bin", "python").exists():
        pytest.skip("no virtual environment to run the README's .venv/bin/python")
    tmp = tmp_path_factory.mktemp("readme")
    model_dir = small_model(tmp / "small-model")
    root = checkout(tmp / "checkout")
    placeholders = _place_inputs(root, tmp / "small-model")
    before = set(written_files(root, set())) | placeholders
    results = {}
    for block in runnable(README.read_text()):
        if block.skip is not None:
            results[block.line] = (block, None, 0.0)
            continue
        start = time.perf_counter()
        results[block.line] = (block, run_block(block, root, model_dir), 0.0)
        results[block.line] = (*results[block.line][:2], time.perf_counter() - start)
        print(f"{results[block.line][2]:6.1f} s  {block.name}")  # shown with pytest -s
    return results, written_files(root, before)


def _place_inputs(root: Path, model_dir: Path) -> set[Path]:
    """model.onnx and the exporters' folders the README's commands start from, and the
    native libraries inside the checkout, where a real checkout has them."""
    from amx_export.cli import main
    from amx_export.plugins import library_path

    assert main(["export", str(model_dir), "-o", str(root / "model.onnx")]) == 0
    placed = {Path("model.onnx")}
    ort = library_path("ort", required=False)
    if ort is not None:
        shutil.copytree(Path(ort).parent, root / LIB_COPY)
        placed |= {LIB_COPY / p.name for p in (root / LIB_COPY).iterdir()}
    for target, name in EXPORTER_OUTPUTS.items():
        source = exporter_model(name)
        shutil.copytree(source, root / target, ignore=shutil.ignore_patterns("fixture.json"))
        placed |= {Path(target, p.name) for p in (root / target).iterdir()}
    return placed


def _block_ids() -> list[str]:
    return [b.name for b in runnable(README.read_text())]


@pytest.mark.slow
@pytest.mark.parametrize("name", _block_ids())
def test_readme_block(readme_run, name):
    results, _ = readme_run
    block, result, seconds = next(r for r in results.values() if r[0].name == name)
    if result is None:
        pytest.skip(f"marked in README.md: {block.skip}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{name} exited {result.returncode} after {seconds:.0f} s:\n{output[-3000:]}"
    )
    missing = missing_output(block.expected, output)
    assert missing is None, f"{name} did not print {missing!r}:\n{output[-3000:]}"


@pytest.mark.slow
def test_readme_commands_write_only_what_gitignore_covers(readme_run):
    _, written = readme_run
    assert written, "the README's commands wrote nothing"
    check = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "--verbose", "--non-matching",
         *map(str, written)],
        capture_output=True, text=True,
    )  # fmt: skip
    lines = check.stdout.splitlines()
    uncovered = [line.split("\t")[-1] for line in lines if line.startswith("::")]
    assert not uncovered, f"written by the README's commands, not in .gitignore: {uncovered}"
    assert all(p.parts[0] == "build" or p.suffix in (".onnx", ".data") for p in written), written


def test_blocks_follow_the_convention():
    """Every block is runnable or output, small-model blocks name smollm2, skips say why."""
    found = blocks(README.read_text())
    assert all(b.lang in ("bash", "python") for b in found), [b.name for b in found]
    for block in found:
        if block.small_model:
            assert block.command("SMALL") != block.code or "build/smol" in block.code, block.name
    skipped = [b for b in found if b.skip]
    assert len(skipped) <= len(found) // 3, [b.name for b in skipped]  # few, and honest


def test_output_lines_must_appear_in_order():
    output = "loading x\nwrote build/a.onnx in 12 s\nPASS: 14 layers\n"
    assert missing_output(["wrote build/a.onnx in ... s", "PASS: ... layers"], output) is None
    assert missing_output(["PASS: ... layers", "wrote ..."], output) == "wrote ..."
    assert missing_output(["FAIL"], output) == "FAIL"


def test_markers_and_output_blocks_attach_to_the_block_before():
    text = (
        "<!-- readme-test: skip (needs a GPU) -->\n```bash\nnvidia-smi\n```\n"
        "<!-- readme-test: small-model -->\n```bash\nx export smollm2 -o m.onnx\n```\n"
        "```text\nwrote m.onnx\n```\n"
    )
    gpu, small = blocks(text)
    assert (gpu.skip, gpu.small_model) == ("needs a GPU", False)
    assert small.small_model and small.expected == ["wrote m.onnx"]
    assert small.command("/tmp/tiny") == "x export /tmp/tiny -o m.onnx\n"
    with pytest.raises(ValueError, match="reason in parentheses"):
        blocks("<!-- readme-test: skip -->\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="no command block"):
        blocks("```text\nhello\n```\n")
