import math

import numpy as np
import pytest
import torch

from amx_export import perplexity as ppl


def test_windows_without_overlap_score_all_but_the_first_token():
    spans = ppl.windows(10, 4)
    assert [(w.begin, w.end, w.score_from) for w in spans] == [(0, 4, 0), (4, 8, 0)]


def test_strided_windows_score_each_token_once():
    spans = ppl.windows(12, 6, stride=3)
    assert [(w.begin, w.end) for w in spans] == [(0, 6), (3, 9), (6, 12)]
    scored = []
    for w in spans:  # the prediction at window position p scores token begin + p + 1
        scored += [w.begin + p + 1 for p in range(w.score_from, 6 - 1)]
    assert scored == list(range(1, 12))


def test_bad_stride_is_refused():
    with pytest.raises(ValueError, match="stride"):
        ppl.windows(10, 4, stride=5)


def test_uniform_logits_give_the_vocabulary_size():
    vocab = 1000
    ids = np.arange(9)[None, :]
    nll, count = ppl.window_nll(np.zeros((1, 9, vocab), np.float32), ids, 0)
    assert count == 8
    assert ppl.perplexity(nll, count) == pytest.approx(vocab, rel=1e-12)


def test_window_nll_is_cross_entropy_from_score_from(rng):
    logits = rng.standard_normal((1, 7, 50)).astype(np.float32)
    ids = rng.integers(0, 50, (1, 7))
    nll, count = ppl.window_nll(logits, ids, 3)
    lp = torch.log_softmax(torch.from_numpy(logits[0]).double(), -1)
    expected = -sum(float(lp[p, ids[0, p + 1]]) for p in range(3, 6))
    assert count == 3
    assert nll == pytest.approx(expected, rel=1e-12)
    assert math.isnan(ppl.perplexity(0.0, 0))
