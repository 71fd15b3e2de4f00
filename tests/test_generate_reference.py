"""SmolLM2's greedy continuations from the rewritten ONNX model (our decode loop, custom ops)
against the PyTorch reference of the same numerics (``amx_export.reference``) with
transformers' own generate and cache, over 8 prompts.

(Full precision against transformers is tests/test_real_model.py's cache test; greedy fp32
tokens over these prompts agreed on 7 of 8, one parting at token 29 on a near tie.) W4A4 may
drift: a last-bit
difference of float32 summation order that crosses an E2M1 rounding boundary moves a whole
quantization step (the README's "why the check is statistical"), and in greedy decoding one
flipped argmax changes everything after it. The test prints the agreement and holds it to
what was measured.
"""

import numpy as np
import pytest

from amx_export.cli import main
from amx_export.generation import open_decoder
from amx_export.models import load_tokenizer

pytestmark = pytest.mark.slow
NEW_TOKENS = 32
PROMPTS = [
    "The capital of France is",
    "Photosynthesis is the process by which",
    "def fibonacci(n):",
    "The three primary colors are",
    "In 1969, the first humans",
    "A healthy breakfast usually includes",
    "The quick brown fox",
    "Water boils at a temperature of",
]


def _torch_greedy(model, prompt_ids: list[int]) -> list[int]:
    import torch

    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0,
        )  # fmt: skip
    return out[0, len(prompt_ids) :].tolist()


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))


@pytest.fixture(scope="module")
def amx_onnx(smollm2_onnx, tmp_path_factory):
    path = tmp_path_factory.mktemp("smollm2-amx") / "smollm2.amx.onnx"
    assert main([str(smollm2_onnx), "-o", str(path)]) == 0
    return path


def test_greedy_tokens_agree_with_the_pytorch_reference(smollm2_model, amx_onnx):
    from amx_export.reference import quantized_model

    tokenizer = load_tokenizer("smollm2")
    reference = quantized_model(smollm2_model, "amxfp4")
    decoder = open_decoder(amx_onnx, threads=2)
    prefixes, gaps = [], []
    for prompt in PROMPTS:
        ids = tokenizer(prompt)["input_ids"]
        result = decoder.generate(ids, max_new_tokens=NEW_TOKENS, keep_logits=True)
        theirs = _torch_greedy(reference, ids)
        prefixes.append(at := _common_prefix(result.tokens, theirs))
        if at < NEW_TOKENS:  # how close our logits had the two tokens where they part
            logits = result.step_logits[at]
            gap = logits[result.tokens[at]] - logits[theirs[at]]
            gaps.append(round(float(gap / np.abs(logits).max()), 4))
    whole = sum(p == NEW_TOKENS for p in prefixes)
    mean = np.mean(prefixes)
    print(f"\namxfp4: common greedy prefix per prompt {prefixes} of {NEW_TOKENS}; "
          f"{whole}/{len(PROMPTS)} prompts identical, mean {mean:.1f} tokens; where they part, "
          f"our logit gap between the two tokens / max |logit|: {gaps}")  # fmt: skip
    # measured (session 7, AVX-512 tier): [32, 10, 32, 32, 18, 32, 4, 32], 5/8 identical, mean
    # 24.0. Other CPU tiers sum in another order, so the bound leaves room; the MXFP4 model
    # against this AMXFP4 reference parts at once: [0, 0, 0, 0, 0, 1, 0, 0].
    assert whole >= 3 and mean >= 16, prefixes
