"""Export a transformers causal LM to ONNX: a KV-cache decoder (the default) or logits only.

torch.onnx's dynamo exporter (the default since torch 2.9); the TorchScript exporter fails on
current transformers (aten::diff in the mask code). Attention is exported as plain MatMul /
Softmax ("eager"), so the attention matmuls can be quantized.

The KV-cache graph has the layout of Optimum's and onnxruntime-genai's decoders
(``amx_export.decoder_io`` describes it): inputs ``input_ids``, ``attention_mask``,
``position_ids`` and ``past_key_values.{i}.key/value``, outputs ``logits`` and
``present.{i}.key/value``; one graph serves the prefill (an empty past) and every decode step.
How it is traced, and why:

- ``WithCache`` takes flat tensors and fills a transformers ``DynamicCache`` of plain
  ``DynamicLayer``s, whose ``update`` is ``Concat(past, new)`` along the sequence axis: the
  presents are the concatenations, and Q·Kᵀ and P·V read them (after GQA's repeat), so
  ``quantize --attention`` quantizes the past with the new tokens.
- Sliding-window layers (Gemma 3) keep the whole past too, not transformers'
  ``DynamicSlidingWindowLayer`` (which keeps the last window - 1 positions): every present
  then has the same length, past_sequence + sequence, as the layout requires, and the window
  is applied by the attention mask alone (``create_sliding_window_causal_mask`` is index
  based: key j is visible to query i when i - window < j <= i). The logits are the same;
  the sliding layers' presents hold positions transformers would have dropped.
- The example input has batch 2, sequence 3 and past 5: torch.export specializes a dimension
  whose example is 0 or 1, so the empty past of the prefill and the single token of a decode
  step are never used as examples (both are checked in onnxruntime by the tests). The mask's
  length is its own dynamic dimension: torch.export.Dim cannot be declared as the sum of two
  others, and the mask code only needs it to equal past + sequence at run time.
- Grouped-query attention is exported without transformers' ``repeat_kv`` copies of the
  keys and values: ``GroupedAttentionPass`` stacks the query heads that share a KV head as
  rows of one product (a free reshape), so a decode step no longer copies the whole past
  twice per layer.
- transformers builds the causal/padding mask from index arithmetic on the symbolic lengths
  (no data-dependent branch for eager attention), so one graph takes any past length and any
  left padding; ``position_ids`` comes from the caller (left padding shifts it).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from onnx_ir.passes.common import RemoveUnusedNodesPass

from .errors import UserError
from .graph_passes.grouped_attention import GroupedAttentionPass
from .graph_passes.rms_norm import DivideByRootPass
from .onnx_io import OutputPaths, save_model

OPSET = 18
# torch.onnx logs a warning per torchvision op when torchvision is not installed
REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"
# example sizes for tracing: none may be 0 or 1 (see the module docstring)
EXAMPLE_BATCH, EXAMPLE_SEQUENCE, EXAMPLE_PAST = 2, 3, 5


class LogitsOnly(torch.nn.Module):
    """Wraps a causal LM as input_ids -> logits, without cache or extra outputs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


class WithCache(torch.nn.Module):
    """Wraps a causal LM as (input_ids, attention_mask, position_ids, past) ->
    (logits, *presents), the past and presents flat: key 0, value 0, key 1, ..."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.layers = text_config(model.config).num_hidden_layers

    def forward(self, input_ids, attention_mask, position_ids, past: tuple[torch.Tensor, ...]):
        from transformers import DynamicCache

        cache = DynamicCache()  # no config: full-length layers everywhere (module docstring)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache, use_cache=True,
        )  # fmt: skip
        presents = []
        for layer in out.cache.layers:
            presents += [layer.keys, layer.values]
        return (out.logits, *presents)


def text_config(config):
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def cache_shape(config) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a transformers config."""
    config = text_config(config)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def cache_names(layers: int) -> tuple[list[str], list[str]]:
    """(past input names, present output names), key before value, layer by layer."""
    kinds = [(i, kind) for i in range(layers) for kind in ("key", "value")]
    return (
        [f"past_key_values.{i}.{kind}" for i, kind in kinds],
        [f"present.{i}.{kind}" for i, kind in kinds],
    )


def _trace_with_cache(model: torch.nn.Module):
    """(wrapper, example args, dynamic shapes, input names, output names)."""
    layers, kv_heads, head_dim = cache_shape(model.config)
    vocab = text_config(model.config).vocab_size
    b, s, p = EXAMPLE_BATCH, EXAMPLE_SEQUENCE, EXAMPLE_PAST
    dtype = next(model.parameters()).dtype
    past = tuple(torch.randn(b, kv_heads, p, head_dim, dtype=dtype) for _ in range(2 * layers))
    args = (
        torch.randint(0, vocab, (b, s)),
        torch.ones(b, p + s, dtype=torch.long),
        torch.arange(p, p + s).expand(b, s).contiguous(),
        past,
    )
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    past_seq = torch.export.Dim("past_sequence")
    shapes = (
        {0: batch, 1: seq},
        {0: batch, 1: torch.export.Dim.DYNAMIC},
        {0: batch, 1: seq},
        tuple({0: batch, 2: past_seq} for _ in past),
    )
    past_names, present_names = cache_names(layers)
    inputs = ["input_ids", "attention_mask", "position_ids", *past_names]
    return WithCache(model), args, shapes, inputs, ["logits", *present_names]


def _trace_logits_only(model: torch.nn.Module):
    vocab = text_config(model.config).vocab_size
    args = (torch.randint(0, vocab, (EXAMPLE_BATCH, 8)),)
    shapes = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")},)
    return LogitsOnly(model), args, shapes, ["input_ids"], ["logits"]


def _name_axes(onnx_program) -> None:
    """Name the dynamic axes (batch, sequence, past_sequence) through the whole graph: an
    ExportedProgram gives torch.onnx no Dim names, only symbols such as s10."""
    inputs = {v.name: v.shape for v in onnx_program.model.graph.inputs}
    axes = [("input_ids", 0, "batch"), ("input_ids", 1, "sequence")]
    axes += [(name, 2, "past_sequence") for name in inputs if name.startswith("past_key_values.")]
    if "attention_mask" in inputs:  # its own dimension when traced (module docstring)
        axes.append(("attention_mask", 1, "past_sequence + sequence"))
    mapping = {}
    for name, axis, new in axes:
        dim = inputs[name][axis]
        if isinstance(getattr(dim, "value", None), str) and dim.value not in mapping:
            mapping[dim.value] = new
    onnx_program.rename_axes(mapping)


def export_causal_lm(
    model: torch.nn.Module,
    output: Path,
    opset: int = OPSET,
    attention: str = "eager",
    cache: bool = True,
    on_step: Callable[[str], None] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` (a transformers causal LM) to ``output``.

    ``cache``: True writes the KV-cache decoder (module docstring), False the logits-only
    graph ``input_ids -> logits``. ``attention``: "eager" (the default: Q·Kᵀ scaled after the
    product) or "sdpa" (torch's decomposition scales Q and K by sqrt(scale) each, as other
    exporters' graphs do). ``on_step(text)`` is told each step as it starts. ``metadata``
    goes into the model's metadata_props, with the model's longest sequence
    (``amx_export.max_positions``) where its config says it.
    """
    step = on_step or (lambda text: None)
    model = model.eval()
    model.config._attn_implementation = attention  # both give plain MatMul / Softmax nodes
    trace = _trace_with_cache if cache else _trace_logits_only
    wrapper, args, shapes, inputs, outputs = trace(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        step("tracing the model with torch.export")
        try:
            program = torch.export.export(wrapper, args, dynamic_shapes=shapes, strict=False)
        except Exception as error:  # torch raises many kinds; the first line says which
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UserError(
                f"torch.export cannot trace {type(model).__name__}"
                f"{' with a KV cache' if cache else ''}: {type(error).__name__}: {first}"
            ) from None
        step("translating to ONNX and optimizing (torch.onnx)")
        logger = logging.getLogger(REGISTRATION_LOGGER)
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            onnx_program = torch.onnx.export(
                program, input_names=inputs, output_names=outputs,
                opset_version=opset, dynamo=True, verbose=False,
            )  # fmt: skip
        finally:
            logger.setLevel(level)
    _name_axes(onnx_program)
    DivideByRootPass()(onnx_program.model)  # RMSNorm in the form onnxruntime fuses
    GroupedAttentionPass()(onnx_program.model)  # GQA without copying the keys and values
    RemoveUnusedNodesPass()(onnx_program.model)  # the repeats it replaced
    props = onnx_program.model.metadata_props
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions:
        props["amx_export.max_positions"] = str(positions)
    props.update(metadata or {})
    output = Path(output)
    step(f"writing {output}")
    save_model(onnx_program.model, OutputPaths.check(output))
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


def tiny_gemma3(
    seed: int = 0, hidden: int = 64, layers: int = 3, vocab: int = 256, sliding_window: int = 8
):
    """A small random-weight Gemma 3 text model (``Gemma3ForCausalLM``): layers 0 and 1 use a
    sliding window of ``sliding_window`` positions, layer 2 global attention (the real
    models' pattern is 5 to 1), head_dim 32 (so attention blocks of 32 are whole)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        query_pre_attn_scalar=32, sliding_window=sliding_window, max_position_embeddings=512,
        layer_types=["sliding_attention" if (i + 1) % 3 else "full_attention"
                     for i in range(layers)],
        pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )  # fmt: skip
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(config).eval()
