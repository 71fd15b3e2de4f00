"""The inputs and outputs of an ONNX decoder, logits-only or with a KV cache, in one place.

A KV-cache decoder has Optimum's / onnxruntime-genai's layout: ``input_ids`` [batch,
sequence], ``attention_mask`` [batch, past + sequence], ``position_ids`` [batch, sequence]
(some graphs have none), ``past_key_values.{i}.key/value`` [batch, kv_heads, past, head_dim];
outputs ``logits`` and ``present.{i}.key/value`` [batch, kv_heads, past + sequence,
head_dim]. A logits-only graph takes ``input_ids`` alone. Everything that runs an exported
model on whole sequences (perplexity, check, the tests) feeds it through ``full_pass_feeds``,
which gives a cache graph an empty past; ``greedy`` is a plain decode loop for either form.

    from amx_export.decoder_io import describe, full_pass_feeds, greedy
    io = describe(session)                      # DecoderIO; UserError if no input_ids
    logits = session.run([io.logits], full_pass_feeds(io, ids))[0]
    tokens, step_logits = greedy(session, prompt, new_tokens=32)            # with the cache
    same, _ = greedy(session, prompt, new_tokens=32, use_cache=False)      # full recompute
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UserError

PAST_PREFIX, PRESENT_PREFIX = "past_key_values.", "present."
ORT_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class DecoderIO:
    """What a decoder graph takes: its cache inputs (empty for a logits-only graph) and the
    shape and dtype of one past tensor."""

    past: tuple[str, ...]  # past_key_values.{i}.key/value, in the graph's input order
    kv_heads: int | None
    head_dim: int | None
    dtype: type | None  # numpy dtype of the past tensors
    attention_mask: bool
    position_ids: bool
    logits: str = "logits"  # the logits output (the graph's first output when none is so named)

    @property
    def uses_cache(self) -> bool:
        return bool(self.past)

    def present(self, past_name: str) -> str:
        """``past_key_values.3.key`` -> ``present.3.key``."""
        return PRESENT_PREFIX + past_name.removeprefix(PAST_PREFIX)

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """Past tensors of length 0: [batch, kv_heads, 0, head_dim] each."""
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return {name: np.zeros(shape, self.dtype) for name in self.past}


def describe(session, known: dict | None = None) -> DecoderIO:
    """A DecoderIO from an onnxruntime InferenceSession; UserError (one line) when the graph
    takes no input_ids, or kv_heads / head_dim are symbolic in both its past inputs and its
    present outputs and ``known`` (e.g. from the model's config: keys "kv_heads",
    "head_dim") does not give them."""
    inputs = {i.name: i for i in session.get_inputs()}
    if "input_ids" not in inputs:
        raise UserError(f"not a decoder: no input_ids among its inputs ({', '.join(inputs)})")
    outputs = {o.name: o for o in session.get_outputs()}
    past = tuple(name for name in inputs if name.startswith(PAST_PREFIX))
    kv_heads = head_dim = dtype = None
    if past:
        first = inputs[past[0]]
        present = outputs.get(PRESENT_PREFIX + past[0].removeprefix(PAST_PREFIX))
        shapes = [first.shape] + ([present.shape] if present is not None else [])
        dims = []
        for axis, key in ((1, "kv_heads"), (3, "head_dim")):
            fixed = [s[axis] for s in shapes if len(s) == 4 and isinstance(s[axis], int)]
            if not fixed and key not in (known or {}):
                raise UserError(
                    f"{past[0]}: its {key.replace('_', ' ')} is symbolic ({first.shape}); the "
                    "model's config.json or genai_config.json beside it gives it"
                )
            dims.append(fixed[0] if fixed else known[key])
        kv_heads, head_dim = dims
        if first.type not in ORT_FLOAT_TYPES:
            raise UserError(f"{past[0]}: expected a float32 or float16 tensor, got {first.type}")
        dtype = ORT_FLOAT_TYPES[first.type]
    logits = "logits" if "logits" in outputs else next(iter(outputs))
    return DecoderIO(
        past, kv_heads, head_dim, dtype,
        "attention_mask" in inputs, "position_ids" in inputs, logits,
    )  # fmt: skip


def positions(attention_mask: np.ndarray, sequence: int) -> np.ndarray:
    """position_ids of the last ``sequence`` tokens: each row counts its unmasked tokens, so a
    left-padded row starts at 0 on its first real token (pads get 0 too, as in transformers'
    generate)."""
    counted = np.cumsum(attention_mask.astype(np.int64), axis=1) - 1
    return np.maximum(counted, 0)[:, -sequence:]


def step_feeds(
    io: DecoderIO,
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    past: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Feeds for one pass: ``input_ids`` [batch, sequence] after ``past`` (None: empty), with
    ``attention_mask`` [batch, past + sequence] (None: all ones) and positions from it."""
    ids = np.asarray(input_ids, dtype=np.int64)
    feeds = {"input_ids": ids}
    if not io.uses_cache and not io.attention_mask:
        return feeds
    past = io.empty_past(ids.shape[0]) if past is None else past
    length = ids.shape[1] + (next(iter(past.values())).shape[2] if past else 0)
    mask = np.ones((ids.shape[0], length), np.int64) if attention_mask is None else attention_mask
    if io.attention_mask:
        feeds["attention_mask"] = np.asarray(mask, dtype=np.int64)
    if io.position_ids:
        feeds["position_ids"] = positions(mask, ids.shape[1])
    feeds.update(past)
    return feeds


def full_pass_feeds(io: DecoderIO, input_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Feeds for a single full-sequence pass: the ids, and for a cache graph an empty past,
    an attention mask of ones and positions 0..sequence-1."""
    return step_feeds(io, input_ids)


def presents(io: DecoderIO, names: list[str], values: list[np.ndarray]) -> dict:
    """The next step's past from a run's outputs (``names``: the outputs fetched)."""
    got = dict(zip(names, values, strict=True))
    return {name: got[io.present(name)] for name in io.past}


def greedy(
    session, prompt: np.ndarray, new_tokens: int, use_cache: bool = True
) -> tuple[list[int], list[np.ndarray]]:
    """Greedy decoding of one prompt (int ids [T]): (the new tokens, each step's float32
    logits [vocab]). ``use_cache=False`` recomputes the whole sequence every step (through an
    empty past on a cache graph): the reference a cached decode must equal."""
    io = describe(session)
    ids = [int(t) for t in np.asarray(prompt).ravel()]
    fetch = [io.logits] + ([io.present(n) for n in io.past] if use_cache else [])
    tokens, step_logits, past, feed_ids = [], [], None, ids
    for _ in range(new_tokens):
        if use_cache and io.uses_cache:
            feeds = step_feeds(io, np.array([feed_ids]), None, past)
            values = session.run(fetch, feeds)
            past = presents(io, fetch[1:], values[1:])
        else:
            values = session.run([io.logits], full_pass_feeds(io, np.array([ids])))
        last = np.asarray(values[0][0, -1], dtype=np.float32)
        token = int(last.argmax())
        tokens.append(token)
        step_logits.append(last)
        ids.append(token)
        feed_ids = [token]
    return tokens, step_logits
