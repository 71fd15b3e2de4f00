"""``python -m amx_export generate MODEL.onnx --prompt TEXT``: stream a continuation."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..errors import UserError
from ..models import SMOLLM2_ALIAS

HELP = "generate text with an ONNX language model (rewritten or not) in onnxruntime"
METADATA_KEY = "amx_export.tokenizer"  # a model's metadata may name its tokenizer source
EPILOG = f"""\
The prompt is continued as plain text: no chat template is applied, and the tokenizer adds
its BOS token only where it does so by default. stdout gets the prompt, then each new piece
of text as it is produced. At the end stderr gets one line (wrapped here):

  P prompt tokens, prefill X tokens/s; N new tokens, decode Y tokens/s (stopped: WHY);
  amx nodes: HOW

where the rates are measured after one warm-up token, decode counts the steps after the
first new token, WHY is length (--max-new-tokens), eos, or positions (the model's last
position), and HOW is how onnxruntime ran the amx nodes (custom ops, emulation, or as is
for a model without them). A graph without a KV cache
(input_ids -> logits only) re-runs the whole sequence for every token; a line on stderr
says so first.

KV-cache graphs with Optimum's or onnxruntime-genai's input names run with their cache; the
model's config.json or genai_config.json beside it gives its positions (and the head size
where the graph leaves it symbolic). The tokenizer is --tokenizer, else the one in the
model's folder (tokenizer.json or tokenizer_config.json, or one .gguf file), else the one
the model's metadata names ({METADATA_KEY}). Its vocabulary may be smaller than the
logits (padding: only its ids are candidates), not larger. Generation stops at the
tokenizer's EOS token. --threads sets onnxruntime's intra-op threads, which the custom ops
run on too.

examples:
  python -m amx_export generate model.amx.onnx --prompt "The capital of France is"
  python -m amx_export generate smollm2.amx.onnx --tokenizer {SMOLLM2_ALIAS} --prompt "Once upon"
  python -m amx_export generate model.onnx --prompt "Hi" --temperature 0.8 --top-k 40 --seed 1
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "generate",
        help=HELP,
        description=HELP + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", type=Path, help="the ONNX decoder (KV cache or logits only)")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, help="tokens to generate (default: %(default)s)"
    )
    parser.add_argument(
        "--tokenizer",
        help=f"a tokenizer folder (transformers files or one .gguf), or {SMOLLM2_ALIAS} "
        "(default: the model's folder)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature; 0 (the default) is greedy decoding",
    )
    parser.add_argument(
        "--top-k", type=int, default=0, help="sample among the K likeliest tokens (0: all)"
    )
    parser.add_argument("--seed", type=int, help="seed of the sampler (same seed, same text)")
    parser.add_argument(
        "--provider", choices=["cpu", "cuda"], default="cpu", help="onnxruntime's device"
    )
    parser.add_argument(
        "--threads", type=int, help="threads for onnxruntime and the custom ops (default: all)"
    )
    parser.set_defaults(run=run)


class TextStream:
    """The text each new token adds. Decoding one token alone loses spaces and splits
    multi-byte characters, so a few tokens of context are decoded with it and the text
    waits while it ends in an incomplete character (U+FFFD)."""

    def __init__(self, tokenizer, prompt_ids: list[int]):
        self.tokenizer, self.ids = tokenizer, list(prompt_ids)
        self.start = max(0, len(self.ids) - 4)  # context decoded with the new tokens
        self.done = len(self.ids)  # tokens whose text has been given out

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token: int, final: bool = False) -> str:
        self.ids.append(token)
        before = self._text(self.ids[self.start : self.done])
        after = self._text(self.ids[self.start :])
        # a UTF-8 character is at most 4 tokens of bytes: text that stays broken longer is
        # given out as it is
        held = len(self.ids) - self.done < 4 and after.endswith("\ufffd") and not final
        if len(after) <= len(before) or held:
            return ""
        self.start, self.done = self.done, len(self.ids)
        return after[len(before) :]

    def flush(self) -> str:
        """Whatever is held back at the end (an incomplete character stays U+FFFD)."""
        if self.done == len(self.ids):
            return ""
        token = self.ids.pop()
        return self.add(token, final=True)


def _tokenizer_source(args, decoder) -> str | Path:
    from ..models import TOKENIZER_FILES, has_tokenizer

    if args.tokenizer:
        return args.tokenizer
    folder = args.model.parent
    if has_tokenizer(folder):
        return folder
    named = decoder.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if named:
        return named if named == SMOLLM2_ALIAS else folder / named
    raise UserError(
        f"no tokenizer found: {folder or '.'} has no {' or '.join(TOKENIZER_FILES)} (or one "
        f".gguf file) and the model's metadata names none ({METADATA_KEY}); pass --tokenizer "
        f"DIR (or {SMOLLM2_ALIAS})"
    )


def _rate(tokens: int, seconds: float) -> str:
    return f"{tokens / seconds:.1f} tokens/s" if tokens and seconds > 0 else "- tokens/s"


def run(args: argparse.Namespace) -> int:
    import onnxruntime

    from ..generation import Sampling, open_decoder
    from ..models import load_tokenizer

    if not args.prompt:
        raise UserError("--prompt is empty")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    onnxruntime.set_default_logger_severity(4)  # its failures come back as one error line
    decoder = open_decoder(args.model, provider=args.provider, threads=args.threads)
    sampling = Sampling(args.temperature, args.top_k, args.seed)  # checked before loading
    tokenizer = load_tokenizer(_tokenizer_source(args, decoder))
    if len(tokenizer) > decoder.vocab_size:
        raise UserError(
            f"the tokenizer has {len(tokenizer)} tokens, more than the model's "
            f"{decoder.vocab_size} logits: not this model's tokenizer (--tokenizer)"
        )
    prompt = tokenizer(args.prompt)["input_ids"]
    if not prompt:
        raise UserError("--prompt gives no tokens")
    decoder.check_prompt(prompt)
    if not decoder.uses_cache:
        print(
            f"note: {args.model} has no KV cache: each new token re-runs the whole sequence",
            file=sys.stderr,
        )
    decoder.warm_up()  # the stats are the steady state's
    stream = TextStream(tokenizer, prompt)
    sys.stdout.write(args.prompt)
    sys.stdout.flush()

    def show(token: int) -> None:
        sys.stdout.write(stream.add(token))
        sys.stdout.flush()

    eos = tokenizer.eos_token_id
    try:
        result = decoder.generate(
            prompt,
            max_new_tokens=args.max_new_tokens,
            sampling=dataclasses.replace(sampling, vocab=len(tokenizer)),
            on_token=show,
            stop_ids=() if eos is None else (eos,),
        )
        sys.stdout.write(stream.flush())
    finally:  # the text ends its line however the run ends (an error, Ctrl-C)
        sys.stdout.write("\n")
        sys.stdout.flush()
    new = len(result.tokens)
    why = {"stop": "eos"}.get(result.stop_reason, result.stop_reason)
    print(
        f"{result.prompt_tokens} prompt tokens, prefill "
        f"{_rate(result.prompt_tokens, result.prefill_seconds)}; {new} new tokens, decode "
        f"{_rate(new - 1, result.decode_seconds)} (stopped: {why}); "
        f"amx nodes: {decoder.amx_nodes}",
        file=sys.stderr,
    )
    return 0
