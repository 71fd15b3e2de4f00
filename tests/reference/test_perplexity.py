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


def _word_tokenizer(add_bos: bool, bos: str | None = "<s>"):
    """A word-level tokenizer over 'a'..'h' (ids 3..10); BOS <s> is id 0."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate("abcdefgh")}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token="</s>", unk_token="<unk>",
        add_bos_token=add_bos,
    )  # fmt: skip


def test_bos_follows_what_the_tokenizer_adds():
    assert ppl.bos_prefix(_word_tokenizer(add_bos=True)) == 0
    assert ppl.bos_prefix(_word_tokenizer(add_bos=False)) is None  # SmolLM2's case
    assert ppl.bos_prefix(_word_tokenizer(add_bos=False, bos=None)) is None


def test_bos_windows_hold_bos_and_score_the_same_text_tokens():
    tokens = np.arange(100, 112)
    spans = ppl.windows(12, 5, bos=7)  # 5 positions: BOS and 4 text tokens
    assert [(w.begin, w.end, w.score_from) for w in spans] == [(0, 4, 1), (4, 8, 1), (8, 12, 1)]
    assert spans[1].slice(tokens).tolist() == [[7, 104, 105, 106, 107]]
    strided = ppl.windows(12, 7, stride=3, bos=7)
    scored = []
    for w in strided:  # the prediction at input position p scores text token begin + p
        scored += [w.begin + p for p in range(w.score_from, 7 - 1)]
    assert scored == list(range(1, 12))
    with pytest.raises(ValueError, match="stride must be in 1..4"):
        ppl.windows(12, 5, stride=5, bos=7)


def test_every_window_begins_with_bos_and_bos_is_not_scored(tmp_path):
    """Through evaluate(), on a bigram model (logits from the current token alone): the BOS
    windows' NLL is exactly that of their text tokens but each window's first; scoring the
    prediction made at BOS's position would add a token per window and its NLL."""
    from amx_export.evaluation import EvalSettings, WindowCache, evaluate

    tokenizer = _word_tokenizer(add_bos=True)
    text = " ".join("abcdefgh"[(i * 5) % 8] for i in range(60))
    tokens = tokenizer(text, add_special_tokens=False, return_tensors="np")["input_ids"][0]
    assert len(tokens) == 60 and 0 not in tokens
    table = np.random.default_rng(0).standard_normal((11, 11)).astype(np.float32)
    seen = []

    def bigram(ids):
        seen.append(ids[0].tolist())
        return table[ids]

    for bos, span in ((None, 9), (ppl.bos_prefix(tokenizer), 8)):
        settings = EvalSettings("m", ("fp",), "sha", 9, span, len(tokens), bos=bos)
        cache = WindowCache(tmp_path / f"{bos}.jsonl", settings)
        seen.clear()
        score = evaluate(settings, tokens, lambda runtime, fmt: bigram, cache)[("pytorch", "fp")]
        n = (60 - span) // span + 1
        assert len(seen) == 2 * n and all(len(ids) == 9 for ids in seen)  # both runtimes
        assert score.tokens == n * (span - 1)
        assert score.nll == pytest.approx(_bigram_nll(table, tokens, span), rel=1e-12)
        if bos is not None:
            assert bos == 0 and all(ids[0] == 0 and 0 not in ids[1:] for ids in seen)
            assert [ids[1:] for ids in seen[:2]] == [tokens[:8].tolist(), tokens[8:16].tolist()]


def _bigram_nll(table, tokens, span):
    """NLL of every text token but each span's first, under the bigram table."""
    lp = torch.log_softmax(torch.from_numpy(table).double(), -1).numpy()
    total = 0.0
    for begin in range(0, len(tokens) - span + 1, span):
        window = tokens[begin : begin + span]
        total -= sum(lp[window[p], window[p + 1]] for p in range(span - 1))
    return total


def test_the_cache_key_keeps_old_windows_apart_from_bos_windows():
    from amx_export.evaluation import EvalSettings

    # samples/smollm2/windows.jsonl's key (no BOS: SmolLM2's tokenizer adds none) must hold
    sample = dict(model="smollm2", formats=("fp",), text_sha="f32722f5f351", window=2048,
                  stride=2048, max_tokens=102400)  # fmt: skip
    assert EvalSettings(**sample).fingerprint() == "35417362352f"
    assert EvalSettings(**sample, bos=1).fingerprint() != "35417362352f"
