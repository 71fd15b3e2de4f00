"""Perplexity over fixed-length windows, for any runtime that maps token ids to logits.

The text is tokenized once, without special tokens; window w covers tokens [w·stride,
w·stride + span). Each token is scored once, by the first window that predicts it with
context: with stride == span (the default) that is every token but each window's first. The
negative log-likelihood is summed in float64, so the same logits give the same perplexity
whatever the runtime.

A tokenizer that begins what it encodes with BOS (Gemma's; ``bos_prefix`` asks the tokenizer
itself, so its add_bos_token setting decides) gets BOS at the start of every window, as the
model saw in training: Gemma 3's full-precision perplexity on later windows is 80 without it,
36 with it. BOS then takes one of the window's ``length`` positions (span = length - 1), and
neither it nor the prediction made at its position is scored, so the same text tokens are
scored as without it. SmolLM2's tokenizer has a BOS (``<|im_start|>``) but does not add it.
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
    score_from: int  # the first position (in the model's input) whose prediction is scored
    bos: int | None = None  # the token the model's input begins with, before the text

    def slice(self, tokens: np.ndarray) -> np.ndarray:
        """The model's input, int64 [1, length]."""
        ids = tokens[self.begin : self.end].astype(np.int64)
        return (ids if self.bos is None else np.concatenate([[self.bos], ids]))[None, :]


def bos_prefix(tokenizer) -> int | None:
    """The BOS id every window begins with: the tokenizer's, when it adds it to what it
    encodes (probed, so that its own add_bos_token setting decides); None otherwise."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    ids = tokenizer("a")["input_ids"]  # special tokens as the tokenizer adds them by default
    return int(bos) if len(ids) and ids[0] == bos else None


def text_span(length: int, bos: int | None = None) -> int:
    """Text tokens in a window of ``length`` model positions."""
    return length - (bos is not None)


def windows(
    n_tokens: int, length: int, stride: int | None = None, bos: int | None = None
) -> list[Window]:
    """Windows of exactly ``length`` model positions, BOS (when given) and text (the last
    partial one is dropped); ``stride`` counts text tokens (default: the text span)."""
    span = text_span(length, bos)
    stride = stride or span
    if span < 2:
        raise ValueError(f"a window needs 2 text tokens, {length} positions hold {span}")
    if not 0 < stride <= span:
        raise ValueError(f"stride must be in 1..{span}, got {stride}")
    result, scored_until, shift = [], 0, int(bos is not None)
    for begin in range(0, n_tokens - span + 1, stride):
        end = begin + span
        # a prediction at position p scores token p+1: skip what earlier windows scored
        score_from = max(scored_until - begin - 1, 0) + shift
        result.append(Window(len(result), begin, end, score_from, bos))
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
