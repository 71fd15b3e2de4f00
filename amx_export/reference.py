"""The PyTorch reference: a transformers model with exactly the numerics of the AMXFP4 graph.

``quantized_model(model, "amxfp4")`` returns a copy in which every ``nn.Linear`` except
the language-model head computes ``fake_quant(x) @ fake_quant(W)ᵀ + b`` with the torch path
of ``amx_export.formats``: what the rewritten ONNX graph computes, whatever runtime runs it.
With ``attention=True`` both operands of Q·Kᵀ and P·V are fake-quantized along the reduction
axis too, as ``graph_passes.quantize_attention`` does.

The defaults mirror the ``quantize`` command's: W4A4, the head kept in full precision.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from . import formats


@dataclass(frozen=True)
class QuantConfig:
    """What to fake-quantize, as in ``graph_passes.pipeline.Options``."""

    format: str = formats.DEFAULT
    weights_only: bool = False
    include_head: bool = False
    attention: bool = False


class FakeQuantLinear(nn.Module):
    """``fake_quant(x) @ fake_quant(W)ᵀ + b``: the numerics of one amx.MatMul node.

    The weight is fake-quantized once, at construction, exactly as the pass packs it (blocks
    along in_features); the activation on every call, along its last axis.
    """

    def __init__(self, linear: nn.Linear, fmt: str, act_format: str | None):
        super().__init__()
        with torch.no_grad():
            weight = linear.weight.detach().float()
            self.register_buffer("weight", formats.fake_quant(weight, fmt))
            bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        self.format, self.act_format = fmt, act_format
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_format is not None:
            x = formats.fake_quant(x.float(), self.act_format)
        return nn.functional.linear(x.float(), self.weight, self.bias)

    def extra_repr(self) -> str:
        act = self.act_format or "none"
        return f"{self.in_features} -> {self.out_features}, weight={self.format}, act={act}"


def _head_names(model: nn.Module) -> set[str]:
    """Module names of the language-model head (kept in full precision by default)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name for name, module in model.named_modules() if module is head and head is not None}
    return names | {name for name, _ in model.named_modules() if name.split(".")[-1] == "lm_head"}


def quantized_model(model: nn.Module, config: QuantConfig | str) -> nn.Module:
    """A fake-quantized copy of ``model`` (float32, eval mode); ``model`` is left untouched."""
    if isinstance(config, str):
        config = QuantConfig(format=config)
    spec = formats.get(config.format)
    act = None if config.weights_only else spec.name
    heads = set() if config.include_head else _head_names(model)
    quantized = copy.deepcopy(model).eval()
    targets = [
        (name, module)
        for name, module in quantized.named_modules()
        if isinstance(module, nn.Linear) and name not in heads
    ]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = quantized.get_submodule(parent_name) if parent_name else quantized
        setattr(parent, child, FakeQuantLinear(module, spec.name, act))
    if config.attention:
        quantized.config._attn_implementation = register_attention(spec.name)
    return quantized


def register_attention(fmt: str) -> str:
    """Register eager attention with both operands of each matmul fake-quantized; its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    name = f"amx_eager_{fmt}"

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **_):
        groups = getattr(module, "num_key_value_groups", 1)
        key = key.repeat_interleave(groups, dim=1) if groups > 1 else key
        value = value.repeat_interleave(groups, dim=1) if groups > 1 else value
        # Q·Kᵀ reduces over head_dim: the last axis of both Q and K
        q, k = formats.fake_quant(query, fmt), formats.fake_quant(key, fmt)
        weights = torch.matmul(q, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            weights = weights + attention_mask
        weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
        # P·V reduces over the key positions: P's last axis, V's second-to-last
        p = formats.fake_quant(weights, fmt)
        v = formats.fake_quant(value.transpose(2, 3), fmt).transpose(2, 3)
        output = torch.matmul(p, v).transpose(1, 2).contiguous()
        return output, weights

    AttentionInterface.register(name, attention)
    # an unknown name would get no causal mask: use eager's additive one
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, eager_mask)
    return name


@torch.no_grad()
def logits(model: nn.Module, input_ids) -> torch.Tensor:
    """float32 logits of a causal LM for int64 token ids [batch, sequence]."""
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    return model(input_ids=ids, use_cache=False).logits.float()
