"""``python -m amx_export export MODEL_DIR -o model.onnx``: a transformers causal LM to ONNX."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..models import SMOLLM2_ALIAS

HELP = "export a transformers causal LM (a local folder) to ONNX, ready for quantize"
EPILOG = f"""\
MODEL_DIR is a transformers checkpoint folder (config.json + weights), a folder holding one
.gguf file, or "{SMOLLM2_ALIAS}" for the SmolLM2-135M that setup installs. Nothing is fetched
from a model hub.

The graph takes input_ids [batch, sequence] (both dynamic) and returns float32 logits
[batch, sequence, vocab]; no KV cache. Attention is exported as plain MatMul/Softmax so that
quantize --attention can reach it. Weights over 1.9 GB go to external data (MODEL.onnx.data).

examples:
  python -m amx_export export {SMOLLM2_ALIAS} -o smollm2.onnx
  python -m amx_export smollm2.onnx --emulate          # then quantize it
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
        help="where to write the ONNX model (default: ./<MODEL_DIR name>.onnx)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_causal_lm
    from ..models import load_causal_lm
    from ..onnx_io import OutputPaths

    output = args.output or Path(Path(args.model_dir).name + ".onnx")
    OutputPaths.check(output)  # fail before the minute-long export
    start = time.perf_counter()
    print(f"loading {args.model_dir}")
    model, _ = load_causal_lm(args.model_dir)
    params = sum(p.numel() for p in model.parameters())
    print(f"exporting {type(model).__name__} ({params / 1e6:.0f}M parameters) with torch.onnx")
    export_causal_lm(model, output)
    print(f"wrote {output} in {time.perf_counter() - start:.0f} s")
    return 0
