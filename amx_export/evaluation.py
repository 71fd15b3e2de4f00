"""The accuracy table: perplexity of every format through the PyTorch reference and onnxruntime.

For each format the model runs twice over the same windows: as the PyTorch reference
(``amx_export.reference``) and as the rewritten ONNX model in onnxruntime. Both must agree
(the ONNX graph is meant to compute exactly the reference's numerics), and the table shows
what each format costs against full precision.

Every window's result is appended to a cache file as soon as it is known, so an interrupted
run resumes where it stopped; the cache is keyed by everything that changes the numbers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import perplexity as ppl
from .defaults import FULL_PRECISION
from .reference import QuantConfig

RUNTIMES = ("pytorch", "onnxruntime")


@dataclass(frozen=True)
class EvalSettings:
    model: str
    formats: tuple[str, ...]
    text_sha: str
    window: int
    stride: int
    max_tokens: int
    weights_only: bool = False
    attention: bool = False
    bos: int | None = None  # the token every window begins with (perplexity.bos_prefix)

    def fingerprint(self) -> str:
        numbers = {k: v for k, v in asdict(self).items() if k != "formats"}
        if numbers["bos"] is None:  # windows without BOS keep the keys they had before it
            del numbers["bos"]
        return hashlib.sha1(json.dumps(numbers, sort_keys=True).encode()).hexdigest()[:12]

    def windows(self, n_tokens: int) -> list[ppl.Window]:
        """The windows over the first ``n_tokens`` of the text (at most max_tokens)."""
        return ppl.windows(min(n_tokens, self.max_tokens), self.window, self.stride, self.bos)

    def quant_config(self, fmt: str) -> QuantConfig:
        return QuantConfig(format=fmt, weights_only=self.weights_only, attention=self.attention)


@dataclass
class Score:
    nll: float = 0.0
    tokens: int = 0
    windows: set[int] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def perplexity(self) -> float:
        return ppl.perplexity(self.nll, self.tokens)


class WindowCache:
    """One JSON line per (runtime, format, window) already scored."""

    def __init__(self, path: Path, settings: EvalSettings):
        self.path, self.key = path, settings.fingerprint()
        self.scores: dict[tuple[str, str], Score] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                if row["key"] == self.key:
                    self._add(row)

    def _add(self, row: dict) -> None:
        score = self.scores.setdefault((row["runtime"], row["format"]), Score())
        if row["window"] not in score.windows:
            score.windows.add(row["window"])
            score.nll += row["nll"]
            score.tokens += row["tokens"]
            score.seconds += row["seconds"]

    def done(self, runtime: str, fmt: str, window: int) -> bool:
        score = self.scores.get((runtime, fmt))
        return score is not None and window in score.windows

    def record(self, runtime: str, fmt: str, window: int, nll: float, tokens: int, seconds: float):
        row = {
            "key": self.key,
            "runtime": runtime,
            "format": fmt,
            "window": window,
            "nll": nll,
            "tokens": tokens,
            "seconds": round(seconds, 3),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self._add(row)


def evaluate(
    settings: EvalSettings,
    tokens: np.ndarray,
    runners: Callable[[str, str], Callable[[np.ndarray], np.ndarray]],
    cache: WindowCache,
    advance: Callable[[str], None] = lambda _: None,
) -> dict[tuple[str, str], Score]:
    """Score every (format, runtime) over the windows; ``runners(runtime, fmt)`` builds the
    logits function (loaded lazily: only when a window is still missing)."""
    spans = settings.windows(len(tokens))
    for fmt in settings.formats:
        for runtime in RUNTIMES:
            todo = [w for w in spans if not cache.done(runtime, fmt, w.index)]
            for _ in range(len(spans) - len(todo)):
                advance(f"{fmt} {runtime}")
            run = runners(runtime, fmt) if todo else None
            for w in todo:
                ids = w.slice(tokens)
                start = time.perf_counter()
                logits = run(ids)
                nll, count = ppl.window_nll(logits, ids, w.score_from)
                cache.record(runtime, fmt, w.index, nll, count, time.perf_counter() - start)
                advance(f"{fmt} {runtime}")
    return {key: score for key, score in cache.scores.items() if key[1] in settings.formats}


def table_rows(settings: EvalSettings, scores: dict[tuple[str, str], Score]) -> list[dict]:
    fp = scores.get(("pytorch", FULL_PRECISION))
    rows = []
    for fmt in settings.formats:
        torch_score, onnx_score = scores[("pytorch", fmt)], scores[("onnxruntime", fmt)]
        gap = onnx_score.perplexity / torch_score.perplexity - 1
        rows.append(
            {
                "format": fmt,
                "pytorch": torch_score.perplexity,
                "onnxruntime": onnx_score.perplexity,
                "onnx_gap": gap,
                "vs_fp": None if fp is None else torch_score.perplexity / fp.perplexity,
                "tokens": torch_score.tokens,
                "seconds_per_window": {
                    "pytorch": torch_score.seconds / max(len(torch_score.windows), 1),
                    "onnxruntime": onnx_score.seconds / max(len(onnx_score.windows), 1),
                },
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| format | perplexity (PyTorch reference) | perplexity (onnxruntime) "
        "| ONNX vs PyTorch | vs full precision |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        vs_fp = "" if r["vs_fp"] is None else f"{r['vs_fp']:.3f}x"
        lines.append(
            f"| {r['format']} | {r['pytorch']:.3f} | {r['onnxruntime']:.3f} "
            f"| {r['onnx_gap']:+.3%} | {vs_fp} |"
        )
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["format"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 4.2), dpi=120)
    for offset, runtime, label in (
        (-0.2, "pytorch", "PyTorch reference"),
        (0.2, "onnxruntime", "ONNX in onnxruntime"),
    ):
        values = [r[runtime] for r in rows]
        bars = ax.bar(x + offset, values, 0.4, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylabel("perplexity (lower is better)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
