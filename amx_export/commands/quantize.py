"""``python -m amx_export MODEL.onnx``: rewrite an ONNX model into an AMXFP4 model.

This is the default command: ``python -m amx_export model.onnx`` is
``python -m amx_export quantize model.onnx``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from amx_export.graph_passes import contract

from .. import formats, genai
from ..errors import UserError

HELP = "rewrite MODEL.onnx into an AMXFP4 model (the default command)"
EPILOG = """\
examples:
  python -m amx_export model.onnx                      # W4A4 AMXFP4 -> model.amx.onnx
  python -m amx_export model.onnx --format mxfp4 -o model.mxfp4.onnx
  python -m amx_export model.onnx --weights-only       # W4A16: activations stay as they are
  python -m amx_export model.onnx --emulate            # standard ONNX ops: model.amx.emu.onnx
  python -m amx_export model.onnx --target tensorrt    # for the TensorRT plugins (>= 10.15)
  python -m amx_export genai/model.onnx -o genai-amx/model.onnx   # an onnxruntime-genai folder

onnxruntime-genai folders (a genai_config.json beside MODEL.onnx that runs it): written to
another folder, OUT gets a genai_config.json there that runs it (with custom_ops_library set
to libamx_ort.so's absolute path; none with --emulate) and a copy of the tokenizer files. A
genai_config.json already in OUT's folder is updated when it runs OUT (a rerun) or names no
file that exists; one that runs another model (the input's own, when OUT is beside it) is
left as it is unless --genai-config update. Not for --target tensorrt.
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "quantize",
        help=HELP,
        description=HELP + ". Every linear layer (MatMul/Gemm with a constant weight) gets its "
        "weight packed offline and becomes an amx.MatMul node; the language-model head is "
        "kept in full precision.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, help="the full-precision ONNX model")
    parser.add_argument(
        "-o", "--output", type=Path,
        help="where to write the result (default: beside the input, MODEL.amx.onnx, "
        "MODEL.amx.emu.onnx with --emulate, MODEL.amx.trt.onnx with --target tensorrt)",
    )  # fmt: skip
    parser.add_argument(
        "--format", default=formats.DEFAULT, choices=formats.names(),
        help="weight and activation format (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--weights-only", action="store_true",
        help="quantize the weights only; activations stay in full precision",
    )  # fmt: skip
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="REGEX",
        help="skip layers whose node or weight name matches REGEX (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--include-head", action="store_true",
        help="also quantize the language-model head (detected by the name lm_head or by "
        "feeding a graph output; kept in full precision by default)",
    )  # fmt: skip
    parser.add_argument(
        "--attention", action="store_true",
        help="also fake-quantize both operands of the attention matmuls (Q·Kᵀ, P·V)",
    )  # fmt: skip
    parser.add_argument(
        "--emulate", action="store_true",
        help="lower the amx nodes to standard ONNX ops, so stock onnxruntime runs the model",
    )  # fmt: skip
    parser.add_argument(
        "--no-fuse-rotary", dest="fuse_rotary", action="store_false",
        help="keep rotary position embeddings as the standard ops the exporter wrote (by "
        "default, for onnxruntime, each becomes one com.microsoft.RotaryEmbedding node: about "
        "a tenth of a small model's decode step; its FMA may move an output by one float32 "
        "rounding)",
    )  # fmt: skip
    parser.add_argument(
        "--target", default=contract.ONNXRUNTIME, choices=contract.TARGETS,
        help="the runtime the model is written for (default: %(default)s). tensorrt stores the "
        "packed weights as int32 words holding the same bytes, because TensorRT takes no uint8 "
        "plugin inputs (it would widen every byte to an int32), and gives the amx nodes "
        'plugin_namespace="amx" and plugin_version="1", so that TensorRT 10.15+ imports them as '
        "the amx plugins; libamx_ort.so runs either form (not with --emulate)",
    )  # fmt: skip
    parser.add_argument(
        "--genai-config", default="auto", choices=genai.MODES,
        help="the onnxruntime-genai config when MODEL's folder has one (default: %(default)s, "
        "see below): update also makes a config that runs another model run OUT, off writes "
        "none",
    )  # fmt: skip
    parser.add_argument("--report", type=Path, help="also write the summary as JSON here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: --help and the other commands need none of it
    from amx_export.graph_passes.pipeline import Options, count_amx_nodes, rewrite

    from ..onnx_io import OutputPaths, checker_error, load_model, save_model, write_text
    from ..progress import progress_over
    from ..summary import print_summary, summary_dict

    start = time.perf_counter()
    try:  # options first: a bad --exclude pattern fails before the model is read
        options = Options(
            format=args.format, weights_only=args.weights_only, exclude=args.exclude,
            include_head=args.include_head, attention=args.attention, emulate=args.emulate,
            target=args.target, fuse_rotary=args.fuse_rotary,
        )  # fmt: skip
    except ValueError as error:
        raise UserError(str(error)) from None
    output = args.output or default_output(args.model, args.emulate, args.target)
    model, source = load_model(args.model)  # external data is only mapped, not read
    paths = OutputPaths.check(output, args.report, [args.model, *source.data_files])
    config_plan = genai.plan(
        args.model, paths.model, args.genai_config, options.emulate, options.target
    )
    _check_genai_targets(config_plan, paths)
    source.checker_error = checker_error(args.model)
    if source.checker_error is not None:
        print(
            f"warning: {args.model} fails onnx.checker ({source.checker_error}); rewriting it "
            "anyway, and the output is not held to onnx.checker either",
            file=sys.stderr,
        )
    try:
        already = count_amx_nodes(model) > 0 or "amx_export" in model.metadata_props
        outcome = rewrite(model, options, progress=progress_over("packing weights", "layer"))
    except ValueError as error:  # a model in another form or format, an opset it can't convert
        raise UserError(f"{args.model}: {error}") from None
    if not outcome.quantized and not already:
        counts = Counter(r.reason for r in outcome.layers)  # one entry per reason
        named = {r.reason: r.name for r in outcome.layers}
        reasons = (
            "; ".join(
                f"{named[reason]}: {reason}" if count == 1 else f"{count} {reason}"
                for reason, count in counts.items()
            )
            or "it has no MatMul, Gemm or FusedMatMul with a constant 2-D weight"
        )
        raise UserError(f"{args.model}: no linear layer to quantize ({reasons})")
    if outcome.quantized:
        model.metadata_props["amx_export"] = json.dumps(vars(options))
    seconds = time.perf_counter() - start
    summary = summary_dict(
        args.model, paths.model, options, outcome, seconds, source,
        None if config_plan is None else config_plan.summary(),
    )  # fmt: skip
    if paths.report is not None:  # written first: a failure then leaves the model untouched
        write_text(paths.report, json.dumps(summary, indent=2) + "\n")
    save_model(model, paths, source)
    genai.apply(config_plan)  # after the model: the config is what makes the folder run it
    print_summary(summary, already_done=already and not outcome.modified)
    return 0


def default_output(model: Path, emulate: bool, target: str = contract.ONNXRUNTIME) -> Path:
    """MODEL.amx.onnx, MODEL.amx.emu.onnx or MODEL.amx.trt.onnx: the forms never replace
    each other."""
    suffix = ".amx.emu.onnx" if emulate else ".amx.onnx"
    if target == contract.TENSORRT:
        suffix = ".amx.trt.onnx"
    return model.with_name(model.name.removesuffix(".onnx") + suffix)


def _check_genai_targets(config_plan, paths) -> None:
    """The genai files written must not be the output, its data file or the report."""
    if config_plan is None or config_plan.config is None:
        return
    taken = [p for p in (paths.model, paths.data, paths.report) if p is not None]
    for path in [config_plan.path, *(to for _, to in config_plan.copies)]:
        if any(path.resolve() == p.resolve() for p in taken):
            raise UserError(f"{path}: would be written as both an output and a genai file")
