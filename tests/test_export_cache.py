"""The KV-cache decoder export (amx_export.export, decoder_io) on a small Llama and a small
Gemma 3 (sliding window 8, so a 15-token run crosses it): against transformers with its own
DynamicCache, against the logits-only graph, with left padding, and rewritten for each format
(the cached decode must equal a full recompute of the same rewritten model)."""

import contextlib
import io

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

from amx_export.cli import main
from amx_export.decoder_io import describe, full_pass_feeds, greedy, presents, step_feeds
from amx_export.export import cache_shape
from amx_export.graph_passes.pipeline import Options, rewrite
from amx_export.ort import session

MODELS = ["llama", "gemma3"]
FLOAT32_NOISE = 1e-4  # float32, differently ordered sums, logits of order 1


def _ort_step(sess, io, ids, mask, past):
    fetch = [io.logits] + [io.present(n) for n in io.past]
    values = sess.run(fetch, step_feeds(io, ids, mask, past))
    return values[0], presents(io, fetch[1:], values[1:])


def _torch_step(model, ids, mask, cache):
    positions = torch.from_numpy(np.maximum(np.cumsum(mask, 1) - 1, 0)[:, -ids.shape[1] :])
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
            position_ids=positions, cache=cache, use_cache=True,
        )  # fmt: skip
    return out.logits.numpy(), out.cache


def _rewritten(path, tmp_path, *args):
    out = tmp_path / f"{path.stem}{''.join(args)}.amx.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([str(path), *args, "-o", str(out)]) == 0
    return session(out)[0]


def test_cache_graph_has_the_optimum_layout(tiny_export):
    model, path = tiny_export("gemma3")
    layers, kv_heads, head_dim = cache_shape(model.config)
    sess = ort.InferenceSession(path)
    past = [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    assert list(shapes) == ["input_ids", "attention_mask", "position_ids", *past]
    assert shapes["attention_mask"] == ["batch", "past_sequence + sequence"]
    assert shapes["past_key_values.2.value"] == ["batch", kv_heads, "past_sequence", head_dim]
    outputs = {o.name: o.shape for o in sess.get_outputs()}
    assert list(outputs) == ["logits", *(n.replace("past_key_values", "present") for n in past)]
    assert outputs["present.0.key"] == ["batch", kv_heads, "past_sequence + sequence", head_dim]
    io = describe(sess)
    assert (io.kv_heads, io.head_dim, io.dtype, io.uses_cache) == (2, 32, np.float32, True)


@pytest.mark.parametrize("name", MODELS)
def test_prefill_and_decode_equal_transformers(tiny_export, name):
    """11 prompt tokens, then 4 decode steps: logits and presents against transformers'
    DynamicCache, whose sliding layers keep only the last window - 1 positions."""
    from transformers import DynamicCache

    model, path = tiny_export(name)
    sess = ort.InferenceSession(path)
    io = describe(sess)
    cache = DynamicCache(config=model.config)
    ids = np.random.default_rng(3).integers(0, 256, (1, 11))
    mask, past, truncated = np.ones((1, 11), np.int64), None, False
    for _ in range(5):
        got, past = _ort_step(sess, io, ids, mask, past)
        want, cache = _torch_step(model, ids, mask, cache)
        assert np.abs(got - want).max() <= FLOAT32_NOISE
        for i, layer in enumerate(cache.layers):
            for kind, theirs in (("key", layer.keys), ("value", layer.values)):
                ours = past[f"past_key_values.{i}.{kind}"]
                assert ours.shape[2] == mask.shape[1]  # every present holds the whole past
                kept = theirs.shape[2]
                truncated |= kept < ours.shape[2]
                assert np.abs(ours[:, :, -kept:] - theirs.numpy()).max() <= FLOAT32_NOISE
        ids = want[:, -1:].argmax(-1)
        mask = np.ones((1, mask.shape[1] + 1), np.int64)
    assert truncated == (name == "gemma3")  # the window was crossed and applied


@pytest.mark.parametrize("name", MODELS)
def test_prefill_through_an_empty_past_equals_the_logits_only_graph(tiny_export, name):
    cached = ort.InferenceSession(tiny_export(name)[1])
    plain = ort.InferenceSession(tiny_export(name, cache=False)[1])
    assert [i.name for i in plain.get_inputs()] == ["input_ids"]
    ids = np.random.default_rng(4).integers(0, 256, (2, 13))
    a = cached.run(["logits"], full_pass_feeds(describe(cached), ids))[0]
    b = plain.run(None, {"input_ids": ids})[0]
    assert np.abs(a - b).max() <= 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_left_padded_batch_equals_each_row_alone(tiny_export, name):
    """Row 0: 10 tokens; row 1: 6 tokens after 4 pads (positions restart at its first real
    token). Prefill and 3 decode steps per row, against each row run alone."""
    sess = ort.InferenceSession(tiny_export(name)[1])
    io = describe(sess)
    rng = np.random.default_rng(5)
    rows = [rng.integers(1, 256, 10), rng.integers(1, 256, 6)]
    ids = np.stack([rows[0], np.concatenate([np.zeros(4, np.int64), rows[1]])])
    mask = np.stack([np.ones(10, np.int64), (np.arange(10) >= 4).astype(np.int64)])
    batch_logits, past = [], None
    for _ in range(4):
        logits, past = _ort_step(sess, io, ids, mask, past)
        batch_logits.append(logits[:, -1])
        ids = logits[:, -1:].argmax(-1)
        mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
    for r, prompt in enumerate(rows):
        _, alone = greedy(sess, prompt, 4)
        for step, logits in enumerate(alone):
            assert np.abs(batch_logits[step][r] - logits).max() <= FLOAT32_NOISE, (r, step)


# every format whose numbers depend on each token alone: W4A4 AMXFP4 / MXFP4 (one scale set
# per block of 32 within a row) and every weights-only form. Not NVFP4 W4A4: its activation
# tensor scale is the amax of the whole call's tensor, so one decode token and a recompute of
# the whole sequence quantize that token differently (by design of the format).
CASES = [
    ("llama", "amxfp4"), ("llama", "amxfp4-e4m3"), ("llama", "amxfp4-e8m0"), ("llama", "mxfp4"),
    ("llama", "amxfp4", "--weights-only"), ("llama", "nvfp4", "--weights-only"),
    ("gemma3", "amxfp4", "--weights-only"), ("gemma3", "mxfp4", "--weights-only"),
    ("llama1", "amxfp4", "--attention"), ("llama1", "mxfp4", "--attention"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_rewritten_cached_decode_equals_full_recompute(tiny_export, tmp_path, case):
    """Greedy, 3 prompts x 32 new tokens: the same tokens, and each step's logits within
    float32 summation order, with the cache and recomputing the whole sequence each step."""
    name, fmt, *extra = case
    sess = _rewritten(tiny_export(name)[1], tmp_path, "--format", fmt, *extra)
    for seed, length in enumerate((5, 12, 19)):
        prompt = np.random.default_rng(seed).integers(0, 256, length)
        tokens, logits = greedy(sess, prompt, 32)
        again, recomputed = greedy(sess, prompt, 32, use_cache=False)
        assert tokens == again
        worst = max(np.abs(a - b).max() for a, b in zip(logits, recomputed, strict=True))
        assert worst <= FLOAT32_NOISE, (seed, worst)


@pytest.mark.parametrize("name", MODELS)
def test_rewrite_keeps_the_cache_float_and_quantizes_attention_over_the_past(tiny_export, name):
    model, path = tiny_export(name)
    layers = cache_shape(model.config)[0]
    graph = ir.load(path)
    outcome = rewrite(graph, Options(attention=True))
    assert len(outcome.quantized) == 7 * layers  # q, k, v, o, gate, up, down; not the head
    assert len(outcome.attention_matmuls) == 2 * layers
    for value in graph.graph.outputs[1:]:  # the presents: Concat(past, new), in float
        node = value.producer()
        assert (node.op_type, node.inputs[0].name) == ("Concat", value.name.replace(
            "present.", "past_key_values."))  # fmt: skip
    # both operands read from the past: each K and V quantizer reaches a past input
    reached = set()
    for node in graph.graph:
        if node.domain == "amx" and node.op_type == "Quantize" and node.name.endswith("in1/amx_q"):
            value = node.inputs[0]
            for _ in range(10):
                producer = value.producer()
                if producer is None:
                    break
                value = producer.inputs[0]
            reached.add(value.name)
    past = {f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")}
    assert reached == past


def test_attention_quantization_of_v_runs_along_the_sequence(tiny_export, tmp_path):
    """Why a cached decode with --attention differs from a full recompute with 2+ layers: P·V
    quantizes V along the key axis in blocks of 32 positions, so a position's output depends on
    the later positions of its block. A prefix of whole blocks (32) keeps its logits when
    tokens follow; a prefix ending inside a block (20) does not. Without --attention both hold.
    Then, from a 32-token prompt, the first decode step still equals the recompute."""
    path = tiny_export("llama")[1]
    ids = np.random.default_rng(5).integers(0, 256, (1, 40))
    for args, causal_at_20 in (((), True), (("--attention",), False)):
        sess = _rewritten(path, tmp_path, *args)
        io = describe(sess)
        full = sess.run(["logits"], full_pass_feeds(io, ids))[0]
        for length in (32, 20):
            part = sess.run(["logits"], full_pass_feeds(io, ids[:, :length]))[0]
            gap = np.abs(part - full[:, :length]).max()
            if length == 32 or causal_at_20:
                assert gap <= FLOAT32_NOISE, (args, length, gap)
            else:
                assert gap > 1e-2, (args, length, gap)
    tokens, logits = greedy(sess, ids[0, :32], 2)
    again, recomputed = greedy(sess, ids[0, :32], 2, use_cache=False)
    assert tokens == again
    assert max(np.abs(a - b).max() for a, b in zip(logits, recomputed, strict=True)) <= 1e-4


def test_export_help_describes_the_cache_and_no_cache(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--no-cache" in out and "past_key_values.{i}.key" in out and "present.{i}.key" in out
    assert "By default the graph is a decoder with a KV cache" in out


@pytest.mark.parametrize("name", MODELS)
def test_rms_norms_are_exported_in_the_form_onnxruntime_fuses(tiny_export, tmp_path, name):
    model, path = tiny_export(name)
    exported = ir.load(path)
    assert not [n for n in exported.graph.all_nodes() if n.op_type == "Reciprocal"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(path, options)
    fused = [
        n for n in ir.load(tmp_path / "optimized.onnx").graph.all_nodes()
        if n.op_type == "SimplifiedLayerNormalization"
    ]  # fmt: skip
    layers = cache_shape(model.config)[0]
    assert len(fused) >= 2 * layers + 1  # two per layer and the final norm, at least
