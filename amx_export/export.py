"""Export a transformers causal LM to ONNX (logits only, no KV cache).

torch.onnx's dynamo exporter (the default since torch 2.9) with dynamic batch and sequence
axes; the TorchScript exporter fails on current transformers (aten::diff in the mask code).
Attention is exported as plain MatMul / Softmax ("eager"), so the attention matmuls can be
quantized. The example input has batch 2: an example of 1 would specialize the batch axis.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .onnx_io import OutputPaths, save_model

OPSET = 18


class LogitsOnly(torch.nn.Module):
    """Wraps a causal LM as input_ids -> logits, without cache or extra outputs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def export_causal_lm(
    model: torch.nn.Module, output: Path, opset: int = OPSET, attention: str = "eager"
) -> Path:
    """Write ``model`` (a transformers causal LM) to ``output``.

    ``attention``: "eager" (the default: Q·Kᵀ scaled after the product) or "sdpa" (torch's
    decomposition scales Q and K by sqrt(scale) each, as other exporters' graphs do).
    """
    model = model.eval()
    model.config._attn_implementation = attention  # both give plain MatMul / Softmax nodes
    example = torch.randint(0, model.config.vocab_size, (2, 8))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            LogitsOnly(model), (example,),
            input_names=["input_ids"], output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}},
            opset_version=opset, dynamo=True, verbose=False,
        )  # fmt: skip
    output = Path(output)
    save_model(program.model, OutputPaths.check(output))
    return output


def tiny_llama(seed: int = 0, hidden: int = 64, layers: int = 2, vocab: int = 256):
    """A small random-weight Llama (the architecture of SmolLM2) for fast tests and demos."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=True,
    )  # fmt: skip
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()
