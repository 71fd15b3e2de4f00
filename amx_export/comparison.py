"""Polygraphy files and statistics shared by the ``reference`` and ``check`` commands.

Inputs are polygraphy's own format (a JSON list of feed dicts, what ``polygraphy run
--save-inputs`` writes and ``--load-inputs`` reads); references are polygraphy RunResults.

``reference -o ref.json`` writes three files: ``ref.json`` (the fake-quant run, the one a
runtime must match), ``ref.fp.json`` (the full-precision run) and ``ref.inputs.json``. Two
runs in one file would not work with the stock CLI: ``polygraphy run --load-outputs``
compares each run with the next, so it would also compare the two references with each other.

Why a W4A4 comparison is statistical: two float32 implementations of the same graph differ in
the last bits (summation order), and once such a difference moves a value across an E2M1
rounding boundary the outputs differ by a whole quantization step, which then moves further
values in later layers. On real text a sequence either matches to ~1e-5 or, from some
position on, drifts by an amount of the order of the quantization error itself. So the check
is on the mean absolute error averaged over all inputs, with a tolerance set relative to the
reference's own distance from full precision: a correct runtime sits far below it, a wrong
format, scale rule or packing sits at or above it.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

RUNNER_PREFIX = "amx-reference"
# check passes when mean |runtime - reference| <= this x mean |reference - full precision|;
# measured on SmolLM2 (16 x 32 tokens of Wikipedia): a correct runtime 0.11-0.14, a
# different format ~1 (see docs/NOTES.md)
DEFAULT_TOLERANCE = 0.5


@contextmanager
def polygraphy_log(verbose: bool = False):
    """Polygraphy's own log (its [I] lines, per-input statistics, and the [E] FAILED of single
    inputs inside a check that passes on the average) only when asked: the commands print
    their own summary."""
    from polygraphy.logger import G_LOGGER

    if verbose:
        yield
        return
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        yield


def reference_paths(ref: Path) -> tuple[Path, Path, Path]:
    """(fake-quant, full-precision, inputs) file paths for ``-o ref``."""
    stem = ref.name.removesuffix(".json")
    return ref, ref.with_name(stem + ".fp.json"), ref.with_name(stem + ".inputs.json")


def runner_name(fmt: str) -> str:
    return f"{RUNNER_PREFIX}:{fmt}"


def load_inputs(path: Path) -> list[dict[str, np.ndarray]]:
    """Polygraphy's input format: a list of {input name: array}."""
    from polygraphy.json import load_json

    if not path.is_file():
        raise UserError(f"{path}: no such inputs file")
    try:
        feeds = load_json(str(path))
    except Exception as error:  # polygraphy raises its own error types
        raise UserError(f"{path}: not a polygraphy inputs file ({error})") from None
    if not isinstance(feeds, list) or not feeds or not all(isinstance(f, dict) for f in feeds):
        raise UserError(f"{path}: expected a non-empty JSON list of {{input name: array}}")
    for i, feed in enumerate(feeds):
        ids = feed.get("input_ids")
        if not isinstance(ids, np.ndarray) or ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise UserError(f"{path}: iteration {i} needs an integer input_ids [batch, sequence]")
        feed["input_ids"] = ids.astype(np.int64)
    return feeds


def save_json(obj, path: Path) -> None:
    from polygraphy.json import save_json as polygraphy_save

    polygraphy_save(obj, str(path))


def text_inputs(tokens: np.ndarray, count: int, length: int) -> list[dict[str, np.ndarray]]:
    """``count`` feeds of [1, length] consecutive tokens, spread over the text."""
    if len(tokens) < count * length:
        raise UserError(f"the text has {len(tokens)} tokens, fewer than {count} x {length}")
    step = len(tokens) // count
    return [
        {"input_ids": tokens[i * step : i * step + length][None, :].astype(np.int64)}
        for i in range(count)
    ]


def run_results(name: str, outputs: list[dict[str, np.ndarray]]):
    from polygraphy.comparator import IterationResult, RunResults

    results = RunResults()
    results.append((name, [IterationResult(outputs=o, runner_name=name) for o in outputs]))
    return results


def load_run(path: Path, role: str) -> tuple[str, list[dict[str, np.ndarray]]]:
    """(runner name, per-iteration outputs) of a single-run RunResults file."""
    from polygraphy.comparator import RunResults

    if not path.is_file():
        raise UserError(
            f"{path}: no such {role} file (write it with python -m amx_export reference)"
        )
    try:
        results = RunResults.load(str(path))
    except Exception as error:
        raise UserError(f"{path}: not a polygraphy RunResults file ({error})") from None
    if len(results) != 1:
        raise UserError(f"{path}: expected one run, found {len(results)}")
    name, iterations = results[0]
    return name, [{k: np.asarray(v) for k, v in it.items()} for it in iterations]


@dataclass
class Distance:
    """How far outputs ``a`` are from outputs ``b`` (all iterations together)."""

    max_abs: float
    mean_abs: float
    cosine: float
    top1: float | None  # argmax agreement over the last axis (logits), None for other outputs

    @classmethod
    def between(cls, a: list[np.ndarray], b: list[np.ndarray], top1: bool) -> Distance:
        x = np.concatenate([v.astype(np.float64).ravel() for v in a])
        y = np.concatenate([v.astype(np.float64).ravel() for v in b])
        diff = np.abs(x - y)
        cosine = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) or 1.0))
        agree = None
        if top1:
            agree = float(
                np.mean(
                    np.concatenate(
                        [(u.argmax(-1) == v.argmax(-1)).ravel() for u, v in zip(a, b, strict=True)]
                    )
                )
            )
        return cls(float(diff.max()), float(diff.mean()), cosine, agree)

    def row(self) -> list[str]:
        top1 = "" if self.top1 is None else f"{self.top1:.2%}"
        return [f"{self.max_abs:.4g}", f"{self.mean_abs:.4g}", f"{self.cosine:.6f}", top1]


def model_format(metadata: dict[str, str]) -> str | None:
    """The format a rewritten model was made with (from the metadata quantize writes)."""
    try:
        return json.loads(metadata["amx_export"])["format"]
    except (KeyError, ValueError, TypeError):
        return None
