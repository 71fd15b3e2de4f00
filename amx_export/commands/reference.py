"""``python -m amx_export reference MODEL_DIR -o ref.json``: reference outputs for polygraphy."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import formats
from ..comparison import reference_paths
from ..defaults import OUTPUT_DIR
from ..models import SMOLLM2_ALIAS
from ..text import WIKIPEDIA

HELP = "run the PyTorch reference and save its outputs as polygraphy RunResults"
EPILOG = f"""\
Writes three files for -o ref.json:
  ref.json         the fake-quant reference (what a runtime must match), runner {{name}}
  ref.fp.json      the full-precision model's outputs
  ref.inputs.json  the inputs used (polygraphy's --load-inputs format)

Inputs come from --inputs (polygraphy's format, e.g. written by polygraphy run
--save-inputs), or are made from real text: --sequences sequences of --length tokens.

Then compare a runtime against it:
  python -m amx_export check model.amx.onnx --reference ref.json
or with the stock polygraphy CLI (emulation form, no custom ops needed):
  polygraphy run model.amx.onnx --onnxrt --load-inputs ref.inputs.json \\
      --load-outputs ref.json --check-error-stat mean --check-average --rtol 0 --atol A
where A is the tolerance this command prints (see amx_export/comparison.py for why a W4A4
comparison is a statistical one). ref.inputs.json holds input_ids only: the stock CLI takes it
for a logits-only graph (export --no-cache); check fills in a KV-cache decoder's other inputs
(an empty past, a mask of ones, positions).

examples:
  python -m amx_export reference {SMOLLM2_ALIAS} --format amxfp4 -o ref.json
  python -m amx_export reference {SMOLLM2_ALIAS} --inputs inputs.json -o ref.json
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "reference",
        help=HELP,
        description=HELP + ".",
        epilog=EPILOG.replace("{name}", "amx-reference:FORMAT"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help=f"model folder, or {SMOLLM2_ALIAS}")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path(OUTPUT_DIR, "ref.json"),
        help="the fake-quant RunResults file; the other two go beside it and the folder is "
        "made if needed (default: %(default)s)",
    )
    parser.add_argument(
        "--format",
        default=formats.DEFAULT,
        choices=formats.names(),
        help="weight and activation format (default: %(default)s)",
    )
    parser.add_argument("--weights-only", action="store_true", help="W4A16, as quantize's")
    parser.add_argument("--include-head", action="store_true", help="as quantize's")
    parser.add_argument("--attention", action="store_true", help="as quantize's")
    parser.add_argument("--inputs", type=Path, help="polygraphy inputs JSON to run on")
    parser.add_argument(
        "--text", default=WIKIPEDIA, help=f"text to make inputs from (default: {WIKIPEDIA})"
    )
    parser.add_argument(
        "--sequences",
        type=int,
        default=16,
        help="inputs to make from the text (default: %(default)s)",
    )
    parser.add_argument(
        "--length", type=int, default=32, help="tokens per made input (default: %(default)s)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..comparison import (
        DEFAULT_TOLERANCE,
        Distance,
        load_inputs,
        polygraphy_log,
        run_results,
        runner_name,
        save_json,
    )
    from ..defaults import FULL_PRECISION
    from ..errors import UserError
    from ..models import load_causal_lm
    from ..onnx_io import OutputPaths
    from ..progress import Steps, counting_progress
    from ..reference import QuantConfig, quantized_model

    ref_path, fp_path, inputs_path = reference_paths(args.output)
    ref_path.parent.mkdir(parents=True, exist_ok=True)
    for path in (ref_path, fp_path, inputs_path):
        OutputPaths.check(path)
    if args.sequences < 1 or args.length < 2:
        raise UserError("--sequences must be >= 1 and --length >= 2")
    feeds = load_inputs(args.inputs) if args.inputs else None

    with Steps() as step:
        step(f"loading {args.model_dir}")
        model, tokenizer = load_causal_lm(args.model_dir)
        if feeds is None:
            from ..comparison import text_inputs
            from ..text import load_text

            step(f"tokenizing {args.text}")
            tokens = tokenizer(load_text(args.text), return_tensors="np")["input_ids"][0]
            feeds = text_inputs(tokens, args.sequences, args.length)
        vocab = model.config.vocab_size
        for i, feed in enumerate(feeds):
            ids = feed["input_ids"]
            if ids.min() < 0 or ids.max() >= vocab:
                raise UserError(f"iteration {i}: token ids must be in 0..{vocab - 1}")
        step(f"running {len(feeds)} inputs through full precision and {args.format}")
        config = QuantConfig(args.format, args.weights_only, args.include_head, args.attention)
        quantized = quantized_model(model, config)
        step.close()
        with counting_progress("reference", 2 * len(feeds), "run") as advance:
            fp_out = [_logits(model, f, advance, FULL_PRECISION) for f in feeds]
            fq_out = [_logits(quantized, f, advance, args.format) for f in feeds]
        step(f"writing {ref_path}, {fp_path.name} and {inputs_path.name}")
        with polygraphy_log():
            run_results(runner_name(args.format), fq_out).save(str(ref_path))
            run_results(runner_name(FULL_PRECISION), fp_out).save(str(fp_path))
            save_json(feeds, inputs_path)
    gap = Distance.between([o["logits"] for o in fq_out], [o["logits"] for o in fp_out], True)
    print(
        f"wrote {ref_path} ({args.format}), {fp_path} and {inputs_path}: {len(feeds)} inputs\n"
        f"{args.format} vs full precision: mean |logit error| {gap.mean_abs:.4g}, top-1 "
        f"agreement {gap.top1:.2%}; check's default tolerance ({DEFAULT_TOLERANCE} x that): "
        f"--atol {DEFAULT_TOLERANCE * gap.mean_abs:.4g}"
    )
    return 0


def _logits(model, feed: dict, advance, label: str) -> dict:
    from ..reference import logits

    out = {"logits": logits(model, feed["input_ids"]).numpy()}
    advance(label)
    return out
