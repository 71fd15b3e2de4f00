"""Perplexity over fixed-length windows, for any runtime that maps token ids to logits.

The text is tokenized once; window w covers tokens [w·stride, w·stride + length). Each token
is scored once, by the first window that predicts it with context: with stride == length (the
default) that is every token but each window's first. The negative log-likelihood is summed in
float64, so the same logits give the same perplexity whatever the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Logits = Callable[[np.ndarray], np.ndarray]  # int64 [1, T] -> float32 [1, T, vocab]


@dataclass(frozen=True)
class Window:
    index: int
    begin: int
    end: int
    score_from: int  # the first position (in the window) whose prediction is scored

    def slice(self, tokens: np.ndarray) -> np.ndarray:
        return tokens[self.begin : self.end].astype(np.int64)[None, :]


def windows(n_tokens: int, length: int, stride: int | None = None) -> list[Window]:
    """Windows of exactly ``length`` tokens (the last partial one is dropped)."""
    stride = stride or length
    if not 0 < stride <= length:
        raise ValueError(f"stride must be in 1..{length}, got {stride}")
    result, scored_until = [], 0
    for begin in range(0, n_tokens - length + 1, stride):
        end = begin + length
        # a prediction at position p scores token p+1: skip what earlier windows scored
        score_from = max(scored_until - begin - 1, 0)
        result.append(Window(len(result), begin, end, score_from))
        scored_until = end
    return result


def window_nll(logits: np.ndarray, ids: np.ndarray, score_from: int) -> tuple[float, int]:
    """(summed negative log-likelihood, tokens scored) of one window, in float64."""
    pred = torch.from_numpy(np.ascontiguousarray(logits[0, score_from:-1])).double()
    target = torch.from_numpy(ids[0, score_from + 1 :])
    nll = torch.nn.functional.cross_entropy(pred, target, reduction="sum")
    return float(nll), int(target.numel())


def perplexity(nll_sum: float, count: int) -> float:
    return math.exp(nll_sum / count) if count else float("nan")
