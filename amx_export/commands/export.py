"""``python -m amx_export export MODEL_DIR -o model.onnx``: a transformers causal LM to ONNX."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..defaults import OUTPUT_DIR
from ..models import SMOLLM2_ALIAS

HELP = "export a transformers causal LM (a local folder) to ONNX, ready for quantize"
EPILOG = f"""\
MODEL_DIR is a transformers checkpoint folder (config.json + weights), a folder holding one
.gguf file, or "{SMOLLM2_ALIAS}" for the SmolLM2-135M that setup installs. Nothing is fetched
from a model hub.

By default the graph is a decoder with a KV cache, in Optimum's / onnxruntime-genai's layout:
  inputs   input_ids [batch, sequence], attention_mask [batch, past_sequence + sequence],
           position_ids [batch, sequence],
           past_key_values.{{i}}.key / .value [batch, kv_heads, past_sequence, head_dim]
  outputs  logits [batch, sequence, vocab], present.{{i}}.key / .value
           [batch, kv_heads, past_sequence + sequence, head_dim]
One graph serves the prefill (past_sequence 0: empty past tensors) and every decode step;
all axes named here are dynamic. Sliding-window layers (Gemma 3) keep the whole past and
apply the window in the mask. --no-cache writes input_ids -> logits only: generation then
recomputes the whole sequence at every step; the stock polygraphy CLI (on the inputs that
reference writes) and the TensorRT sample take this form.

Attention is exported as plain MatMul/Softmax, the past included (K and V are Concat(past,
new)), so that quantize --attention can reach it. Weights over 1.9 GB go to external data
(MODEL.onnx.data). Tested architectures: Llama (SmolLM2) and Gemma 3 text
(Gemma3ForCausalLM); others whose transformers code takes a DynamicCache may work.

examples:
  python -m amx_export export {SMOLLM2_ALIAS}     # -> {OUTPUT_DIR}/smollm2.onnx (KV cache)
  python -m amx_export export {SMOLLM2_ALIAS} --no-cache -o {OUTPUT_DIR}/smollm2.nc.onnx
  python -m amx_export {OUTPUT_DIR}/smollm2.onnx   # rewrite: {OUTPUT_DIR}/smollm2.amx.onnx
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "export",
        help=HELP,
        description=HELP + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the model to export")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help=f"where to write the ONNX model; its folder is made if needed (default: "
        f"{OUTPUT_DIR}/<MODEL_DIR name>.onnx)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="write the logits-only graph (input_ids -> logits), without KV cache",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_causal_lm
    from ..models import load_causal_lm
    from ..onnx_io import OutputPaths
    from ..progress import Steps

    output = args.output or Path(OUTPUT_DIR, Path(args.model_dir).name + ".onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    OutputPaths.check(output)  # fail before the minute-long export
    start = time.perf_counter()
    with Steps(start) as step:
        step(f"loading {args.model_dir}")
        model, _ = load_causal_lm(args.model_dir)
        params = sum(p.numel() for p in model.parameters())
        form = "logits only" if args.no_cache else "a decoder with KV cache"
        print(f"exporting {type(model).__name__} ({params / 1e6:.0f}M parameters) as {form}")
        # `generate` finds the tokenizer here: the alias, or the folder the model came from
        source = args.model_dir
        if source != SMOLLM2_ALIAS:
            source = Path(source).resolve()
        metadata = {"amx_export.tokenizer": str(source)}
        export_causal_lm(model, output, cache=not args.no_cache, on_step=step, metadata=metadata)
    print(f"wrote {output} in {time.perf_counter() - start:.0f} s")
    return 0
