"""Text generation through onnxruntime: the decode loop, with or without a KV cache.

A KV-cache decoder (Optimum's and onnxruntime-genai's names, docs/NOTES.md) runs the prompt
once with empty past tensors, then one token per step with the presents fed back as the next
step's past: onnxruntime's own values, rebound through an IOBinding, never copied or reshaped
in Python (at long contexts faster than numpy through ``run``). onnxruntime-genai
models (GroupQueryAttention) are fed the same way: their genai_config.json asks for one
max-length buffer shared by past and present, but plain onnxruntime takes a growing past as
well (same numbers). A logits-only graph (``input_ids -> logits``) re-runs the whole sequence
for every new token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .decoder_io import describe
from .errors import UserError

# inputs the loop knows how to fill besides the past tensors
EXTRA_INPUTS = ("attention_mask", "position_ids", "use_cache_branch")
DTYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(bool)": np.bool_,
}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy (argmax) at temperature 0, otherwise a draw from
    softmax(logits / temperature) over the ``top_k`` largest (0: all) with a numpy Generator
    seeded by ``seed`` (the same seed gives the same tokens). ``vocab``: only ids below it
    are candidates (a tokenizer smaller than the model's padded logits)."""

    temperature: float = 0.0
    top_k: int = 0
    seed: int | None = None
    vocab: int | None = None

    def __post_init__(self):
        if not (np.isfinite(self.temperature) and self.temperature >= 0):
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise UserError(f"top-k must be >= 0 (0: all tokens), got {self.top_k}")
        if self.vocab is not None and self.vocab < 1:
            raise UserError(f"the candidate vocabulary must be >= 1, got {self.vocab}")

    def chooser(self) -> Callable[[np.ndarray], int]:
        """A function from one position's logits [vocab] to the next token."""
        vocab = self.vocab
        if self.temperature == 0:
            return lambda logits: int(np.argmax(logits[:vocab]))
        rng = np.random.default_rng(self.seed)
        inverse, top_k = 1.0 / self.temperature, self.top_k

        def draw(logits: np.ndarray) -> int:
            scaled = logits[:vocab].astype(np.float64) * inverse
            ids = None
            if 0 < top_k < scaled.size:
                ids = np.argpartition(scaled, -top_k)[-top_k:]
                scaled = scaled[ids]
            weights = np.cumsum(np.exp(scaled - scaled.max()))
            pick = min(int(np.searchsorted(weights, rng.random() * weights[-1], "right")),
                       scaled.size - 1)  # fmt: skip
            return pick if ids is None else int(ids[pick])

        return draw


@dataclass
class Result:
    tokens: list[int]  # the new tokens, a stop id included when one ended the run
    prompt_tokens: int
    prefill_seconds: float  # the prompt's run and the first token
    decode_seconds: float  # every step after the first token
    stop_reason: str  # "length" (max_new_tokens), "stop" (a stop id), "positions" (model's limit)
    step_logits: list[np.ndarray] = field(default_factory=list)  # [vocab] float32 per token


@dataclass(frozen=True)
class _Layout:
    """What a graph takes: names and dtypes of its inputs, its past tensors' fixed dims."""

    ids_dtype: type
    extra: dict[str, type]  # attention_mask / position_ids / use_cache_branch it has
    past: list[str]  # past input names, in the order the presents are asked for
    present: list[str]
    past_dtype: type | None
    past_dims: tuple[int, int] | None  # (kv heads, head dim) of an empty past


def _folder_config(folder: Path) -> dict:
    """max_positions / kv_heads / head_dim from the model folder's config.json or
    genai_config.json, where they say."""
    found = {}
    config = folder / "config.json"
    if config.is_file():
        c = json.loads(config.read_text())
        heads = c.get("num_attention_heads")
        found["max_positions"] = c.get("max_position_embeddings")
        found["kv_heads"] = c.get("num_key_value_heads", heads)
        found["head_dim"] = c.get("head_dim") or (
            c["hidden_size"] // heads if heads and c.get("hidden_size") else None
        )
        found["max_positions_from"] = "config.json max_position_embeddings"
    genai = folder / "genai_config.json"
    if genai.is_file():
        m = json.loads(genai.read_text()).get("model", {})
        decoder = m.get("decoder", {})
        found["max_positions"] = m.get("context_length", found.get("max_positions"))
        found["max_positions_from"] = "genai_config.json context_length"
        found["kv_heads"] = decoder.get("num_key_value_heads", found.get("kv_heads"))
        found["head_dim"] = decoder.get("head_size", found.get("head_dim"))
    return {k: v for k, v in found.items() if v is not None}


def _dtype(path: Path, arg) -> type:
    if arg.type not in DTYPES:
        raise UserError(f"{path}: the input {arg.name} is {arg.type}, which numpy cannot feed")
    return DTYPES[arg.type]


def _layout(session, path: Path, folder: dict) -> _Layout:
    """The graph's feeding layout; a UserError naming what is missing if it is no decoder."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if "logits" not in outputs:
        raise UserError(
            f"{path}: not a decoder: it has no 'logits' output (outputs: {', '.join(outputs)})"
        )
    if len(outputs["logits"].shape) != 3:
        raise UserError(
            f"{path}: not a decoder: 'logits' is {outputs['logits'].shape}, not "
            "[batch, sequence, vocab]"
        )
    if "input_ids" not in inputs:
        raise UserError(
            f"{path}: not a decoder: it has no 'input_ids' input (inputs: {', '.join(inputs)})"
        )
    try:  # the past tensors, their kv heads and head dim, from the graph or the folder
        io = describe(session, folder)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    past = list(io.past)
    unknown = [n for n in inputs if n not in ("input_ids", *EXTRA_INPUTS, *past)]
    if unknown:
        raise UserError(f"{path}: not a decoder this loop can feed: unknown inputs {unknown}")
    present = [io.present(n) for n in past]
    missing = [n for n in present if n not in outputs]
    if missing:
        raise UserError(f"{path}: past inputs without their present outputs: {missing}")
    past_dims = (io.kv_heads, io.head_dim) if past else None
    extra = {n: _dtype(path, inputs[n]) for n in EXTRA_INPUTS if n in inputs}
    return _Layout(_dtype(path, inputs["input_ids"]), extra, past, present, io.dtype, past_dims)


class _Runner:
    """One generation's model calls: ``first(prompt)`` and then ``next(token)``, each giving
    the last position's logits. Inputs and outputs go through an IOBinding: the presents stay
    onnxruntime's values (on the device, with CUDA) and are bound as the next past as they
    are; masks and positions are views of arrays made once."""

    def __init__(self, session, layout: _Layout, capacity: int, cache: bool, device: str):
        self.session, self.layout, self.cache, self.device = session, layout, cache, device
        extra = layout.extra
        self.mask = np.ones((1, capacity), extra.get("attention_mask", np.int64))
        self.positions = np.arange(capacity, dtype=extra.get("position_ids", np.int64))[None]
        self.branch = (np.array([False]), np.array([True]))  # Optimum's merged decoder
        self.sequence = np.zeros((1, capacity), layout.ids_dtype)
        self.token = np.zeros((1, 1), layout.ids_dtype)
        self.outputs = ["logits", *layout.present] if cache else ["logits"]
        self.length = 0  # tokens the model has seen (in its cache, or in the sequence)
        self.binding = session.io_binding()
        if layout.past:  # bound once; with the cache, each step's presents replace them
            heads, dim = layout.past_dims
            self.empty = np.zeros((1, heads, 0, dim), layout.past_dtype)
            for name in layout.past:
                self.binding.bind_cpu_input(name, self.empty)

    def _run(self, ids: np.ndarray, start: int) -> np.ndarray:
        """Feeds ``ids`` as positions start.. and returns the last position's logits."""
        end = start + ids.shape[1]
        binding, extra = self.binding, self.layout.extra
        binding.bind_cpu_input("input_ids", ids)
        if "attention_mask" in extra:
            binding.bind_cpu_input("attention_mask", self.mask[:, :end])
        if "position_ids" in extra:
            binding.bind_cpu_input("position_ids", self.positions[:, start:end])
        if "use_cache_branch" in extra:
            binding.bind_cpu_input("use_cache_branch", self.branch[start > 0])
        binding.clear_binding_outputs()
        for name in self.outputs:
            binding.bind_output(name, self.device)
        try:
            self.session.run_with_iobinding(binding)
        except RuntimeError as error:  # the model's problem (e.g. a shape it mislabels)
            message = " ".join(str(error).split()).removeprefix("Error in execution: ")
            raise UserError(f"onnxruntime failed at position {start}: {message}") from None
        outputs = binding.get_outputs()
        if self.cache:
            for name, value in zip(self.layout.past, outputs[1:], strict=True):
                binding.bind_ortvalue_input(name, value)
        return outputs[0].numpy()[0, -1]

    def first(self, prompt: np.ndarray) -> np.ndarray:
        self.sequence[0, : prompt.size] = prompt
        self.length = prompt.size
        return self._run(self.sequence[:, : self.length], 0)

    def next(self, token: int) -> np.ndarray:
        self.sequence[0, self.length] = token
        self.length += 1
        if not self.cache:  # the whole sequence again, with empty past
            return self._run(self.sequence[:, : self.length], 0)
        self.token[0, 0] = token
        return self._run(self.token, self.length - 1)


MAX_POSITIONS_KEY = "amx_export.max_positions"  # metadata that `export` writes


class Decoder:
    """A language model in onnxruntime, ready to generate; made by ``open_decoder``."""

    def __init__(self, session, amx_nodes: str, path: Path, cache: bool = True):
        folder = _folder_config(Path(path).parent)
        self.session, self.amx_nodes, self.path = session, amx_nodes, Path(path)
        cuda = session.get_providers()[0] == PROVIDERS["cuda"]
        self.device = "cuda" if cuda else "cpu"  # where the presents stay between steps
        self.layout = _layout(session, self.path, folder)
        self.uses_cache = cache and bool(self.layout.past)
        self.max_positions: int | None = folder.get("max_positions")
        self.max_positions_from: str | None = folder.get("max_positions_from")
        written = session.get_modelmeta().custom_metadata_map.get(MAX_POSITIONS_KEY)
        if self.max_positions is None and written and written.isdigit():
            self.max_positions, self.max_positions_from = int(written), MAX_POSITIONS_KEY
        vocab = session.get_outputs()[[o.name for o in session.get_outputs()].index("logits")]
        if isinstance(vocab.shape[2], int):
            self.vocab_size = vocab.shape[2]
        else:  # a symbolic vocabulary: one token tells
            self.vocab_size = self.warm_up().size

    def warm_up(self) -> np.ndarray:
        """Runs one token (id 0) through the graph, so that onnxruntime's first-run work
        (allocations, the custom ops' set-up: 1.5 s of SmolLM2's first 0.1 s call) stays out
        of later timings; returns its logits."""
        return _Runner(self.session, self.layout, 1, False, self.device).first(np.zeros(1))

    def check_prompt(self, prompt_ids: Iterable[int]) -> np.ndarray:
        """The prompt as int64 ids; a UserError if it is empty, has ids the model does not
        know, or is longer than the model's positions."""
        prompt = np.asarray(list(prompt_ids), np.int64)
        if prompt.size == 0:
            raise UserError("the prompt has no tokens")
        if prompt.min() < 0 or prompt.max() >= self.vocab_size:
            raise UserError(
                f"the prompt has token ids outside the model's vocabulary 0..{self.vocab_size - 1}"
            )
        if self.max_positions is not None and prompt.size > self.max_positions:
            raise UserError(
                f"the prompt is {prompt.size} tokens, longer than the model's "
                f"{self.max_positions} positions ({self.max_positions_from})"
            )
        return prompt

    def generate(
        self,
        prompt_ids: Iterable[int],
        max_new_tokens: int = 32,
        sampling: Sampling | None = None,
        on_token: Callable[[int], None] | None = None,
        stop_ids: Iterable[int] = (),
        keep_logits: bool = False,
    ) -> Result:
        """Up to ``max_new_tokens`` tokens after ``prompt_ids`` (fewer at a stop id, which is
        kept, or at the model's last position); ``on_token`` sees each as it comes."""
        prompt = self.check_prompt(prompt_ids)
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        limit, reason = max_new_tokens, "length"
        # the last new token is never fed back, so it needs no position of its own
        if self.max_positions is not None and self.max_positions - prompt.size + 1 < limit:
            limit, reason = self.max_positions - prompt.size + 1, "positions"
        choose = (sampling or Sampling()).chooser()
        stops = frozenset(stop_ids)
        capacity = prompt.size + limit
        runner = _Runner(self.session, self.layout, capacity, self.uses_cache, self.device)
        tokens, kept = [], []
        start = time.perf_counter()
        logits = runner.first(prompt)
        token = choose(logits)
        decode_start = time.perf_counter()
        while True:
            tokens.append(token)
            if keep_logits:
                kept.append(np.array(logits, np.float32))
            if on_token is not None:
                on_token(token)
            if token in stops or len(tokens) == limit:
                break
            logits = runner.next(token)
            token = choose(logits)
        end = time.perf_counter()
        return Result(
            tokens=tokens,
            prompt_tokens=int(prompt.size),
            prefill_seconds=decode_start - start,
            decode_seconds=end - decode_start,
            stop_reason="stop" if token in stops else reason,
            step_logits=kept,
        )


def providers(provider: str) -> list[str]:
    """onnxruntime's provider list for "cpu" or "cuda" (CUDA falls back to CPU per node)."""
    import onnxruntime

    if provider not in PROVIDERS:
        raise UserError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")
    name = PROVIDERS[provider]
    available = onnxruntime.get_available_providers()
    if name not in available:
        raise UserError(
            f"provider {provider}: this onnxruntime has no {name} (it has {', '.join(available)})"
        )
    return [name] if name == PROVIDERS["cpu"] else [name, PROVIDERS["cpu"]]


def open_decoder(
    path: Path | str, provider: str = "cpu", threads: int | None = None, cache: bool = True
) -> Decoder:
    """A Decoder for the ONNX model at ``path``; a UserError (one line) if it is not one.

    ``threads``: onnxruntime's intra-op threads; ``cache=False`` re-runs the whole sequence
    each step even on a KV-cache graph (what the cache is checked against).
    """
    from .ort import session

    path = Path(path)
    if threads is not None and threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    chosen = providers(provider)
    sess, how = session(path, chosen, threads=threads)
    if chosen[0] not in sess.get_providers():  # onnxruntime fell back to the CPU
        raise UserError(f"provider {provider}: onnxruntime could not start {chosen[0]}")
    return Decoder(sess, how, path, cache=cache)
