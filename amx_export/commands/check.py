"""``python -m amx_export check MODEL.amx.onnx --reference ref.json``: runtime vs reference."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..comparison import DEFAULT_TOLERANCE

HELP = "run a rewritten model and compare it with the PyTorch reference (polygraphy)"
EPILOG = """\
Runs MODEL in onnxruntime on the reference's inputs through polygraphy's Comparator (a
KV-cache decoder runs each input as one pass through an empty past, its other inputs filled
in). The check passes when the mean absolute error against the fake-quant reference,
averaged over all inputs, is at most --tolerance times the reference's own mean distance
from full precision (or --atol when given), and, for a model with amx nodes, every
amx.MatMul's output equals fake_quant(X) @ dequant(W)^T on the X the runtime itself gave it
(to 1e-4 of its range; exact but for float32 summation order). Exit status: 0 pass,
1 mismatch, 2 bad input.

Prints a short summary: the distances to the reference and to full precision (reported, not
checked), then per output the mean |error| against the bound, how many inputs are within it
on their own (single inputs may drift above it: see the README, "why the check is
statistical"), PASS/FAIL, and one verdict line. --verbose adds polygraphy's own log.

A model with amx nodes runs on the custom-op library when it is built, otherwise on its
emulation (the same numbers, standard ONNX ops), which the output says.

examples:
  python -m amx_export reference smollm2 -o build/ref.json
  python -m amx_export check build/smollm2.amx.onnx --reference build/ref.json
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "check",
        help=HELP,
        description=HELP + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, help="the rewritten ONNX model")
    parser.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="the fake-quant RunResults written by the reference command",
    )
    parser.add_argument(
        "--full-precision",
        type=Path,
        help="the full-precision RunResults (default: REF.fp.json beside it)",
    )
    parser.add_argument(
        "--inputs", type=Path, help="polygraphy inputs (default: REF.inputs.json beside it)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="allowed mean error as a fraction of the reference's mean error "
        "against full precision (default: %(default)s)",
    )
    parser.add_argument("--atol", type=float, help="an absolute mean-error tolerance instead")
    parser.add_argument("--no-layers", action="store_true", help="skip the layer-by-layer check")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show polygraphy's own log: per-input error statistics (where a single "
        "input that drifts is logged as [E] FAILED, while the check is on the average)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator, RunResults, SimpleCompareFunc

    from ..comparison import (
        Distance,
        load_inputs,
        load_run,
        model_format,
        polygraphy_log,
        reference_paths,
        run_results,
    )
    from ..decoder_io import describe, full_pass_feeds
    from ..errors import UserError
    from ..onnx_io import load_model
    from ..ort import session
    from ..progress import counting_progress

    _, default_fp, default_inputs = reference_paths(args.reference)
    with polygraphy_log(args.verbose):
        ref_name, ref_out = load_run(args.reference, "reference")
        fp_name, fp_out = load_run(args.full_precision or default_fp, "full-precision reference")
        feeds = load_inputs(args.inputs or default_inputs)
    if not (len(ref_out) == len(fp_out) == len(feeds)):
        raise UserError(
            f"{args.reference}: {len(ref_out)} reference runs, {len(fp_out)} full-precision "
            f"runs and {len(feeds)} inputs; they must come from the same reference command"
        )
    model, _ = load_model(args.model)
    ref_format, fmt = ref_name.rpartition(":")[2], model_format(dict(model.metadata_props))
    if fmt is not None and fmt != ref_format:
        raise UserError(
            f"{args.model} is a {fmt} model but {args.reference} is the {ref_format} reference"
        )

    sess, mode = session(args.model)
    print(f"running {args.model} in onnxruntime: {mode}")
    io = describe(sess)  # a KV-cache graph gets an empty past, a mask of ones, positions
    feeds = [full_pass_feeds(io, f["input_ids"]) | f for f in feeds]
    runner = OnnxrtRunner(sess, name="onnxruntime")
    with (
        polygraphy_log(args.verbose),
        counting_progress("onnxruntime", len(feeds), "input") as (advance),
    ):
        live = Comparator.run([runner], data_loader=_advancing(feeds, advance))
    name, iterations = live[0]
    got = [{k: it[k] for k in it.keys()} for it in iterations]
    outputs = [k for k in ref_out[0] if k in got[0]]
    if not outputs:
        raise UserError(
            f"{args.model}: none of its outputs ({', '.join(got[0])}) is in the reference"
        )

    ref_gap = {
        k: Distance.between([o[k] for o in ref_out], [o[k] for o in fp_out], k == "logits")
        for k in outputs
    }
    atol = args.atol
    if atol is None:
        atol = args.tolerance * min(d.mean_abs for d in ref_gap.values())
    runs = RunResults()
    runs.append((name, iterations))
    runs.append((ref_name, run_results(ref_name, ref_out)[0][1]))
    compare = SimpleCompareFunc(check_error_stat="mean", atol=atol, rtol=0.0)
    with polygraphy_log(args.verbose):
        accuracy = Comparator.compare_accuracy(runs, compare_func=compare, check_average=True)

    _distance_table(args.model.name, mode, ref_format, outputs, got, ref_out, fp_out, ref_gap)
    verdicts = [_OutputVerdict.of(k, got, ref_out, atol, ref_gap[k].mean_abs) for k in outputs]
    _summary_table(verdicts, atol, len(feeds))
    failed = [v.output for v in verdicts if not v.passed]
    passed = bool(accuracy) and not failed
    averaged = f"mean |error| against {ref_name}, averaged over {len(feeds)} inputs"
    if passed:
        print(f"PASS: {averaged}, within --atol {atol:.4g}")
    else:
        print(f"FAIL: {averaged}, above --atol {atol:.4g} for {', '.join(failed) or 'polygraphy'}")
    if not args.no_layers:
        passed &= _check_layers(args.model, feeds[0])
    return 0 if passed else 1


def _advancing(feeds: list[dict], advance):
    for feed in feeds:
        yield feed
        advance()


def _distance_table(title, mode, ref_format, outputs, got, ref_out, fp_out, ref_gap) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..comparison import Distance

    table = Table(title=f"{title} ({mode})", title_justify="left")
    for column in ("output", "comparison", "max |err|", "mean |err|", "cosine", "top-1 agree"):
        table.add_column(column, justify="left" if column in ("output", "comparison") else "right")
    for k in outputs:
        lives = [o[k] for o in got]
        to_ref = Distance.between(lives, [o[k] for o in ref_out], k == "logits")
        to_fp = Distance.between(lives, [o[k] for o in fp_out], k == "logits")
        table.add_row(k, f"onnxruntime vs reference ({ref_format})", *to_ref.row())
        table.add_row("", "onnxruntime vs full precision", *to_fp.row())
        table.add_row("", f"reference ({ref_format}) vs full precision", *ref_gap[k].row())
    Console(width=120).print(table)


@dataclass
class _OutputVerdict:
    """One output against the bound: the check is on the mean |error| averaged over the
    inputs (single inputs may drift above it, README "why the check is statistical")."""

    output: str
    mean_abs: float  # averaged over the inputs, as polygraphy's check_average does
    max_abs: float
    of_reference_error: float  # mean_abs / the reference's mean distance from full precision
    above: list[tuple[int, float]]  # inputs whose own mean |error| exceeds the bound
    passed: bool

    @classmethod
    def of(cls, k: str, got: list, ref: list, atol: float, ref_error: float) -> _OutputVerdict:
        import numpy as np

        diffs = [np.abs(g[k].astype(np.float64) - r[k]) for g, r in zip(got, ref, strict=True)]
        means = [float(d.mean()) for d in diffs]
        mean = float(np.mean(means))
        above = [(i, m) for i, m in enumerate(means) if not m <= atol]
        worst = max(float(d.max()) for d in diffs)
        return cls(k, mean, worst, mean / (ref_error or 1.0), above, mean <= atol)


def _summary_table(verdicts: list[_OutputVerdict], atol: float, inputs: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"check: mean |error| over {inputs} inputs against --atol {atol:.4g}",
                  title_justify="left")  # fmt: skip
    for column in ("output", "mean |err|", "bound", "x quant. error", "max |err|",
                   "inputs within", "verdict"):  # fmt: skip
        table.add_column(column, justify="left" if column == "output" else "right")
    for v in verdicts:
        table.add_row(
            v.output, f"{v.mean_abs:.4g}", f"{atol:.4g}", f"{v.of_reference_error:.3f}",
            f"{v.max_abs:.4g}", f"{inputs - len(v.above)}/{inputs}",
            "PASS" if v.passed else "FAIL",
        )  # fmt: skip
    Console(width=120).print(table)
    for v in verdicts:
        if v.above:
            listed = ", ".join(f"{i} ({m:.3g})" for i, m in v.above[:8])
            more = f" and {len(v.above) - 8} more" if len(v.above) > 8 else ""
            print(f"  {v.output}: inputs above the bound on their own: {listed}{more}")


def _check_layers(path: Path, feed: dict) -> bool:
    """Every amx.MatMul against fake_quant(X) @ dequant(W)^T on the runtime's own X."""
    from ..layer_check import TOLERANCE, expose_layers
    from ..onnx_io import load_model
    from ..ort import model_session

    model, _ = load_model(path)
    layers = expose_layers(model)
    if not layers:
        print("layers: no amx.MatMul node with constant weights (an emulated model?): skipped")
        return True
    sess, _ = model_session(model, str(path))
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(None, feed), strict=True))
    errors = sorted(((layer.error(values[layer.x], values[layer.y]), layer.name)
                     for layer in layers), reverse=True)  # fmt: skip
    bad = [(e, name) for e, name in errors if not e <= TOLERANCE]
    worst, where = errors[0]
    verdict = "FAIL" if bad else "PASS"
    print(
        f"{verdict}: {len(layers)} amx.MatMul layers against fake_quant(X) @ dequant(W)^T on "
        f"their own inputs: worst relative error {worst:.2e} ({where}), tolerance {TOLERANCE}"
    )
    for e, name in bad[:5]:
        print(f"  {name}: {e:.3e}")
    return not bad
