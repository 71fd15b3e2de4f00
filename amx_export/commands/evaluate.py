"""``python -m amx_export eval MODEL_DIR``: the perplexity table, PyTorch and onnxruntime."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from .. import formats
from ..defaults import FULL_PRECISION, GAP_TOKENS, MAX_ONNX_GAP, OUTPUT_DIR, max_onnx_gap
from ..errors import UserError
from ..models import SMOLLM2_ALIAS
from ..text import WIKIPEDIA

HELP = "perplexity of each format through the PyTorch reference and the ONNX model"
DEFAULT_FORMATS = f"{FULL_PRECISION},mxfp4,amxfp4,amxfp4-e4m3,nvfp4"
_GAP, _GAP_4K, _GAP_2K = (100 * g for g in (MAX_ONNX_GAP, max_onnx_gap(4088), max_onnx_gap(2044)))
EPILOG = f"""\
Each format is scored twice over the same windows: by the PyTorch reference (fake-quant
numerics, amx_export.reference) and by the rewritten ONNX model in onnxruntime.
"{FULL_PRECISION}" is the unquantized model. Windows are scored as they finish and cached
(--cache-dir), so a run that is interrupted resumes; exported and rewritten ONNX models are
cached there too.

Exit status: 0 when, for every format, the two perplexities agree within the limit; 1 when
one does not (the table is written either way); 2 on bad input. The two runtimes sum in
different float32 orders, and in W4A4 a last-bit difference that crosses a rounding boundary
moves a window's perplexity a little either way; that averages out over many windows, so
the default limit depends on the tokens scored: {_GAP}% x sqrt({GAP_TOKENS} / tokens), at
least {_GAP}% ({_GAP_4K:.1f}% at 4k tokens, {_GAP_2K:.1f}% at 2k).
A gap well above it is a runtime that computes something else. --max-gap P sets the limit.

Where the tokenizer begins what it encodes with BOS (its own add_bos_token setting: Gemma's
does, SmolLM2's does not), every window begins with BOS, which takes one of the --window
positions and is not scored.

Writes OUTPUT_DIR/perplexity.md (table), perplexity.png (bar chart), perplexity.json.

examples:
  python -m amx_export eval {SMOLLM2_ALIAS} --text {WIKIPEDIA} --window 2048 --max-tokens 102400
  python -m amx_export eval {SMOLLM2_ALIAS} --formats fp,mxfp4,amxfp4 --window 512 --max-tokens 4096
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "eval",
        help=HELP,
        description=HELP + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help=f"model folder, or {SMOLLM2_ALIAS}")
    parser.add_argument(
        "--formats",
        default=DEFAULT_FORMATS,
        help=f"comma-separated formats to score (default: %(default)s); "
        f"known: {FULL_PRECISION}, {', '.join(formats.names())}",
    )
    parser.add_argument(
        "--text",
        default=WIKIPEDIA,
        help=f"a UTF-8 text file, or {WIKIPEDIA} for the English Wikipedia extract that "
        "ships with gensim (default)",
    )
    parser.add_argument("--window", type=int, default=2048, help="tokens per window (%(default)s)")
    parser.add_argument(
        "--stride",
        type=int,
        help="text tokens between window starts (default: a window's text tokens, no overlap)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=102_400,
        help="use the first N tokens of the text (default: %(default)s)",
    )
    parser.add_argument(
        "--max-gap",
        type=float,
        help="largest allowed ONNX vs PyTorch perplexity difference, in percent (default: "
        f"{100 * MAX_ONNX_GAP:g} x sqrt({GAP_TOKENS} / scored tokens), at least "
        f"{100 * MAX_ONNX_GAP:g}; see below)",
    )
    parser.add_argument(
        "--emulate",
        action="store_true",
        help="run the ONNX models in their emulation form even when the custom-op library is built",
    )
    parser.add_argument("--weights-only", action="store_true", help="W4A16 instead of W4A4")
    parser.add_argument(
        "--attention", action="store_true", help="also quantize the attention matmuls"
    )
    parser.add_argument(
        "--onnx",
        type=Path,
        help="the exported full-precision ONNX model (default: export MODEL_DIR into the cache)",
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=Path(OUTPUT_DIR) / "eval",
        help="where to write the table and chart (default: %(default)s)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help=f"ONNX models and per-window scores (default: {OUTPUT_DIR}/eval-cache/<model name>)",
    )
    parser.set_defaults(run=run)


def _parse_formats(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    known = {FULL_PRECISION, *formats.names()}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        listed = ", ".join(unknown) or "(empty)"
        raise UserError(f"--formats: unknown {listed}; known: {', '.join(sorted(known))}")
    return names


def run(args: argparse.Namespace) -> int:
    from ..evaluation import (
        EvalSettings,
        WindowCache,
        bar_chart,
        evaluate,
        markdown_table,
        table_rows,
    )
    from ..models import load_causal_lm
    from ..perplexity import bos_prefix, text_span
    from ..progress import counting_progress
    from ..text import load_text
    from .eval_runners import Runners

    names = _parse_formats(args.formats)
    if args.window < 2 or args.max_tokens < args.window:
        raise UserError(
            f"--window must be >= 2 and --max-tokens >= --window (got {args.window}, "
            f"{args.max_tokens})"
        )
    if args.stride is not None and not 0 < args.stride <= args.window:
        raise UserError(f"--stride must be in 1..{args.window}, got {args.stride}")
    if args.onnx is not None and not args.onnx.is_file():
        raise UserError(f"{args.onnx}: no such ONNX file")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = args.cache_dir or Path(OUTPUT_DIR, "eval-cache") / Path(str(args.model_dir)).name

    text = load_text(args.text)
    print(f"loading {args.model_dir}")
    model, tokenizer = load_causal_lm(args.model_dir)
    # special tokens go per window (BOS, where the tokenizer adds it), not once for the text
    tokens = tokenizer(text, add_special_tokens=False, return_tensors="np")["input_ids"][0]
    tokens = tokens[: args.max_tokens]
    bos = bos_prefix(tokenizer)
    span = text_span(args.window, bos)
    if bos is not None and (span < 2 or (args.stride or 0) > span):
        raise UserError(
            f"--window {args.window} holds BOS and {span} text tokens: the window must be "
            f">= 3 and --stride at most {span}"
        )
    if len(tokens) < span:
        raise UserError(f"{args.text}: only {len(tokens)} tokens, fewer than a window's {span}")
    settings = EvalSettings(
        model=str(args.model_dir),
        formats=names,
        text_sha=hashlib.sha1(tokens.tobytes()).hexdigest()[:12],
        window=args.window,
        stride=args.stride or span,
        max_tokens=len(tokens),
        weights_only=args.weights_only,
        attention=args.attention,
        bos=bos,
    )
    n_windows = len(settings.windows(len(tokens)))
    begins = "" if bos is None else f" (each begins with BOS {tokenizer.bos_token!r}, not scored)"
    print(
        f"{len(tokens)} tokens of {args.text}, {n_windows} windows of {settings.window}{begins}, "
        f"{len(names)} formats x PyTorch and onnxruntime"
    )
    native = False if args.emulate else None
    runners = Runners(model, settings, cache_dir, onnx=args.onnx, native=native)
    cache = WindowCache(cache_dir / "windows.jsonl", settings)
    with counting_progress("perplexity", n_windows * len(names) * 2, "window") as advance:
        scores = evaluate(settings, tokens, runners, cache, advance)

    rows = table_rows(settings, scores)
    mode = "W4A16" if args.weights_only else "W4A4" + (" + attention" if args.attention else "")
    title = (
        f"{args.model_dir}: perplexity on {args.text}, {mode}, {n_windows} windows of "
        f"{settings.window} tokens ({rows[0]['tokens']} scored)"
    )
    table = markdown_table(rows)
    modes = {f: runners.modes.get(f, "cached from an earlier run") for f in names}
    how = "; ".join(f"{f}: {m}" for f, m in modes.items())
    command = "python -m amx_export " + " ".join(getattr(args, "argv", []))
    notes = f"onnxruntime ran {how}.\n" + (f"\nCommand: `{command}`\n" if command else "")
    if bos is not None:
        notes = f"Every window begins with BOS {tokenizer.bos_token!r} (not scored).\n" + notes
    (args.output_dir / "perplexity.md").write_text(f"{title}\n\n{table}\n{notes}")
    (args.output_dir / "perplexity.json").write_text(
        json.dumps(
            {
                "title": title,
                "command": command,
                "settings": vars(settings) | {"formats": list(names)},
                "onnxruntime": modes,
                "rows": rows,
            },
            indent=2,
            default=list,
        )
        + "\n"
    )
    bar_chart(rows, title, args.output_dir / "perplexity.png")
    print(f"\n{title}\n\n{table}\nwrote {args.output_dir}/perplexity.md, .png, .json")
    limit = args.max_gap / 100 if args.max_gap is not None else max_onnx_gap(rows[0]["tokens"])
    why = "--max-gap" if args.max_gap is not None else f"the limit for {rows[0]['tokens']} tokens"
    off = [r["format"] for r in rows if abs(r["onnx_gap"]) > limit]
    if off:
        print(
            f"FAIL: the ONNX perplexity differs from PyTorch's by more than {100 * limit:.2f}% "
            f"({why}) for {', '.join(off)}"
        )
        return 1
    worst = max(abs(r["onnx_gap"]) for r in rows)
    print(f"PASS: ONNX vs PyTorch perplexity within {100 * worst:.2f}% ({why}: {100 * limit:.2f}%)")
    return 0
