"""The decode loop (amx_export.generation) and ``python -m amx_export generate``.

On the exporter fixtures (scripts/exporter_models.sh): Optimum's tiny Llama with past key
values and onnxruntime-genai's (GroupQueryAttention, no position_ids), as they are and
rewritten by the main command. With the cache, every step's logits equal a recompute of the
whole sequence through the same graph (empty past) but for float32 summation order, so the
greedy tokens are the same; onnxruntime-genai's own loop gives the same tokens too.
"""

import contextlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from genai_util import og_greedy

from amx_export.cli import main
from amx_export.commands.generate import METADATA_KEY, TextStream
from amx_export.errors import UserError
from amx_export.generation import Sampling, open_decoder
from amx_export.ort import AS_IS, NATIVE
from amx_export.plugins import library_path

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("EXPORTER_MODELS", ROOT / "build" / "exporter-models"))
PROMPTS = [[299, 281, 289, 261, 78, 70], [5, 17, 42, 9, 100, 3, 77], [250], list(range(40, 73))]
EOS = 1  # the fixtures' tokenizer
STATS = re.compile(
    r"(\d+) prompt tokens, prefill [\d.]+ tokens/s; (\d+) new tokens, decode [\d.]+ tokens/s "
    r"\(stopped: (length|eos|positions)\); amx nodes: (.+)"
)
# rewrites checked: the main command's flags
REWRITES = {"amxfp4": ["--format", "amxfp4"], "mxfp4": ["--format", "mxfp4"],
            "w4a16": ["--weights-only"]}  # fmt: skip


def _needed(reason: str):
    if os.environ.get("AMX_REQUIRE_NATIVE") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def fixture_folder(name: str) -> Path:
    if not (MODELS / name / "fixture.json").is_file():
        _needed(f"{MODELS / name} not made (./scripts/exporter_models.sh; scripts/test.sh runs it)")
    return MODELS / name


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["generate", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory):
    """(fixture, rewrite) -> the rewritten model, in a copy of the fixture's folder (its
    configs and tokenizer beside it)."""
    made = {}

    def get(name: str, rewrite: str) -> Path:
        if (name, rewrite) not in made:
            if library_path("ort", required=False) is None:
                _needed("libamx_ort not built (python -m amx_export build)")
            source = fixture_folder(name)
            folder = tmp_path_factory.mktemp(f"{name}-{rewrite}")
            shutil.copytree(source, folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("model.onnx*"))  # fmt: skip
            with contextlib.redirect_stdout(io.StringIO()):
                code = main([str(source / "model.onnx"), "-o", str(folder / "model.onnx"),
                             *REWRITES[rewrite]])  # fmt: skip
            assert code == 0
            made[name, rewrite] = folder / "model.onnx"
        return made[name, rewrite]

    return get


def model_path(rewritten, name: str, rewrite: str | None) -> Path:
    return fixture_folder(name) / "model.onnx" if rewrite is None else rewritten(name, rewrite)


# ---- (a, b) the cache gives the tokens and logits of a full recompute ------------------------


CASES = [(name, rewrite) for name in ("optimum-llama", "genai-llama-fp32")
         for rewrite in (None, *REWRITES)]  # fmt: skip


@pytest.mark.parametrize(("name", "rewrite"), CASES)
def test_cache_equals_recompute(rewritten, name, rewrite):
    path = model_path(rewritten, name, rewrite)
    cached, recompute = open_decoder(path), open_decoder(path, cache=False)
    assert cached.uses_cache and not recompute.uses_cache
    assert cached.amx_nodes == (AS_IS if rewrite is None else NATIVE)
    assert cached.vocab_size == 384 and cached.max_positions == 256
    for prompt in PROMPTS:
        a = cached.generate(prompt, 32, keep_logits=True)
        b = recompute.generate(prompt, 32, keep_logits=True)
        assert a.tokens == b.tokens and len(a.tokens) == 32
        assert a.prompt_tokens == len(prompt) and a.stop_reason == "length"
        for x, y in zip(a.step_logits, b.step_logits, strict=True):
            assert np.abs(x - y).max() <= 1e-4 * np.abs(y).max()


def test_merged_decoder_and_logits_only_graph():
    """Optimum's merged If decoder (use_cache_branch) gives the tokens of the plain one; a
    TorchScript logits-only export of the same weights runs by recomputing."""
    plain = open_decoder(fixture_folder("optimum-llama") / "model.onnx")
    merged = open_decoder(fixture_folder("optimum-llama-merged") / "decoder_model_merged.onnx")
    script = open_decoder(fixture_folder("torchscript-llama-opset17") / "model.onnx")
    assert merged.uses_cache and not script.uses_cache
    for prompt in PROMPTS[:2]:
        tokens = plain.generate(prompt, 16).tokens
        assert merged.generate(prompt, 16).tokens == tokens
        assert script.generate(prompt, 16).tokens == tokens


def test_the_models_last_position_ends_generation():
    decoder = open_decoder(fixture_folder("optimum-llama") / "model.onnx")
    prompt = [7 + i % 290 for i in range(250)]
    result = decoder.generate(prompt, 32)
    assert (len(result.tokens), result.stop_reason) == (256 - 250 + 1, "positions")
    with pytest.raises(UserError, match="257 tokens, longer than the model's 256 positions"):
        decoder.generate([5] * 257, 4)


def test_stop_ids_end_generation_and_are_kept():
    decoder = open_decoder(fixture_folder("optimum-llama") / "model.onnx")
    tokens = decoder.generate(PROMPTS[0], 12).tokens
    stopped = decoder.generate(PROMPTS[0], 12, stop_ids=(tokens[4],))
    first = tokens.index(tokens[4])
    assert stopped.tokens == tokens[: first + 1] and stopped.stop_reason == "stop"


# ---- sampling ---------------------------------------------------------------------------------


def test_sampling_is_reproducible_per_seed_and_differs_from_greedy():
    decoder = open_decoder(fixture_folder("optimum-llama") / "model.onnx")
    greedy = decoder.generate(PROMPTS[0], 32).tokens
    hot = [decoder.generate(PROMPTS[0], 32, Sampling(2.0, seed=s)).tokens for s in (7, 7, 8)]
    assert hot[0] == hot[1] != hot[2]
    assert hot[0] != greedy
    assert decoder.generate(PROMPTS[0], 32, Sampling(2.0, top_k=1, seed=3)).tokens == greedy


def test_top_k_and_vocab_limit_the_candidates():
    decoder = open_decoder(fixture_folder("optimum-llama") / "model.onnx")
    result = decoder.generate(PROMPTS[1], 32, Sampling(5.0, top_k=3, seed=0), keep_logits=True)
    for token, logits in zip(result.tokens, result.step_logits, strict=True):
        assert token in np.argsort(logits)[-3:]
    result = decoder.generate(PROMPTS[1], 32, Sampling(vocab=100), keep_logits=True)
    assert [int(np.argmax(x[:100])) for x in result.step_logits] == result.tokens
    assert any(int(np.argmax(x)) >= 100 for x in result.step_logits)  # the limit mattered


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"temperature": -1.0}, "temperature must be >= 0"), ({"top_k": -2}, "top-k must be >= 0")],
)
def test_bad_sampling_settings(settings, message):
    with pytest.raises(UserError, match=message):
        Sampling(**settings)


# ---- (d) onnxruntime-genai's own loop gives the same tokens ----------------------------------


def og_folder(model: Path) -> Path:
    """The model's folder with genai_config.json pointing at it and at our custom-op library
    (onnxruntime-genai loads the library a session needs from its config)."""
    config_path = model.parent / "genai_config.json"
    config = json.loads(config_path.read_text())
    decoder = config["model"]["decoder"]
    decoder["filename"] = model.name
    decoder["session_options"]["custom_ops_library"] = str(library_path("ort"))
    config_path.write_text(json.dumps(config))
    return model.parent


@pytest.mark.parametrize("rewrite", [None, "amxfp4", "mxfp4"])
def test_onnxruntime_genai_gives_the_same_greedy_tokens(rewritten, rewrite, tmp_path):
    pytest.importorskip("onnxruntime_genai")
    path = model_path(rewritten, "genai-llama-fp32", rewrite)
    if rewrite is None:  # the fixture's own folder stays as it is
        shutil.copytree(path.parent, tmp_path / "genai")
        path = tmp_path / "genai" / path.name
    folder = og_folder(path)
    decoder = open_decoder(path)
    stops = 0
    for prompt in PROMPTS:
        tokens = og_greedy(folder, list(prompt), 32)
        ours = decoder.generate(prompt, 32, stop_ids=(EOS,))
        assert ours.tokens == tokens
        stops += ours.stop_reason == "stop"
    assert stops < len(PROMPTS)  # most runs are the full 32 tokens


# ---- (c) the command line ---------------------------------------------------------------------


class Writes(io.StringIO):
    """stdout that records each write, to see the text arrive piece by piece."""

    def __init__(self):
        super().__init__()
        self.pieces = []

    def write(self, text):
        self.pieces.append(text)
        return super().write(text)


@pytest.mark.parametrize("rewrite", [None, "amxfp4"])
def test_cli_streams_the_greedy_continuation_and_one_stats_line(rewritten, rewrite):
    from transformers import AutoTokenizer

    path = model_path(rewritten, "optimum-llama", rewrite)
    tokenizer = AutoTokenizer.from_pretrained(path.parent)
    prompt = "Hello world, héllo"
    ids = tokenizer(prompt)["input_ids"]
    expected = open_decoder(path).generate(ids, 20, Sampling(vocab=len(tokenizer)), stop_ids=(EOS,))
    out, err = Writes(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["generate", str(path), "--prompt", prompt, "--max-new-tokens", "20"])
    assert code == 0, err.getvalue()
    text = tokenizer.decode(ids + expected.tokens, skip_special_tokens=True)
    assert out.getvalue() == prompt + text[len(tokenizer.decode(ids)) :] + "\n"
    # the prompt, a piece per token, what the end flushes, the newline
    assert out.pieces[0] == prompt and len(out.pieces) == 3 + len(expected.tokens)
    assert len([p for p in out.pieces[1:-1] if p]) > 5  # text came as the tokens did
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    match = STATS.fullmatch(lines[0])
    assert match, lines[0]
    assert int(match[1]) == len(ids) and int(match[2]) == len(expected.tokens)
    assert match[4] == (AS_IS if rewrite is None else NATIVE)


def test_cli_says_when_the_graph_has_no_cache():
    path = fixture_folder("torchscript-llama-opset17") / "model.onnx"
    code, out, err = cli(path, "--prompt", "Hello", "--max-new-tokens", "3")
    assert code == 0, err
    note, stats = err.splitlines()
    assert note == f"note: {path} has no KV cache: each new token re-runs the whole sequence"
    assert STATS.fullmatch(stats) and out.startswith("Hello")


def test_cli_sampling_with_a_seed_is_reproducible():
    path = fixture_folder("optimum-llama") / "model.onnx"
    runs = [cli(path, "--prompt", "Hello", "--temperature", "1.5", "--top-k", "50", "--seed",
                seed, "--max-new-tokens", "24")[1] for seed in (3, 3, 4)]  # fmt: skip
    greedy = cli(path, "--prompt", "Hello", "--max-new-tokens", "24")[1]
    assert runs[0] == runs[1] != runs[2] and runs[0] != greedy


def test_cli_finds_the_tokenizer_named_in_the_metadata(tmp_path):
    source = fixture_folder("optimum-llama")
    shutil.copytree(source, tmp_path / "tok", ignore=shutil.ignore_patterns("model.onnx"))
    model = onnx.load(source / "model.onnx")
    onnx.helper.set_model_props(model, {METADATA_KEY: "tok"})
    onnx.save(model, tmp_path / "m.onnx")
    expected = cli(source / "model.onnx", "--prompt", "Hello", "--max-new-tokens", "8")[1]
    code, out, err = cli(tmp_path / "m.onnx", "--prompt", "Hello", "--max-new-tokens", "8")
    assert code == 0, err
    assert out == expected


def _big_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer of 500 tokens: more than the fixtures' 384 logits."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(500)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core).save_pretrained(folder)
    return folder


def test_bad_inputs_are_one_line_and_exit_2(tmp_path):
    llama = fixture_folder("optimum-llama") / "model.onnx"
    alone = tmp_path / "alone" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(llama, alone)
    long_prompt = " ".join(f"ab{i}" for i in range(300))
    cases = {
        "missing file": ([tmp_path / "none.onnx", "--prompt", "a"], "no such file"),
        "empty prompt": ([llama, "--prompt", ""], "--prompt is empty"),
        "not a decoder": (
            [fixture_folder("optimum-bert") / "model.onnx", "--prompt", "a"],
            "not a decoder: it has no 'logits' output (outputs: last_hidden_state)",
        ),
        "no tokenizer": ([alone, "--prompt", "a"], "no tokenizer found:"),
        "bad --tokenizer": ([llama, "--prompt", "a", "--tokenizer", tmp_path], "no tokenizer"),
        "tokenizer too big": (
            [llama, "--prompt", "w1 w2", "--tokenizer", _big_tokenizer(tmp_path / "big")],
            "the tokenizer has 500 tokens, more than the model's 384 logits",
        ),
        "prompt too long": (
            [llama, "--prompt", long_prompt],
            "longer than the model's 256 positions (config.json max_position_embeddings)",
        ),
        "zero tokens": ([llama, "--prompt", "a", "--max-new-tokens", "0"], "--max-new-tokens"),
        "threads": ([llama, "--prompt", "a", "--threads", "0"], "--threads must be >= 1"),
        "temperature": ([llama, "--prompt", "a", "--temperature", "-1"], "temperature"),
    }
    for what, (args, message) in cases.items():
        code, out, err = cli(*args)
        assert code == 2, (what, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (what, err)
        assert message in err, (what, err)
        assert out == "", (what, out)  # nothing is printed before the input is known good


def test_cuda_without_its_provider_is_one_line():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    code, _, err = cli(fixture_folder("optimum-llama") / "model.onnx", "--prompt", "a",
                       "--provider", "cuda")  # fmt: skip
    assert code == 2 and err.startswith("error: provider cuda: this onnxruntime has no")


def test_text_stream_gives_whole_characters_and_spaces():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fixture_folder("optimum-llama"))
    ids = tokenizer("Hello world, héllo wörld — naïve café 日本語 text")["input_ids"]
    stream = TextStream(tokenizer, ids[:3])
    pieces = [stream.add(token) for token in ids[3:]] + [stream.flush()]
    assert "".join(pieces) == tokenizer.decode(ids)[len(tokenizer.decode(ids[:3])) :]
    assert not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p) > 10


def test_symbolic_cache_dims_need_the_config_beside_the_model(tmp_path):
    """genai's graphs leave the head size symbolic: the genai_config.json beside the model
    gives it, and without it the error says so."""
    source = fixture_folder("genai-llama-fp32")
    for name in ("model.onnx", "model.onnx.data"):
        shutil.copy(source / name, tmp_path / name)
    with pytest.raises(UserError, match="is symbolic .*genai_config.json beside it gives it"):
        open_decoder(tmp_path / "model.onnx")
    shutil.copy(source / "genai_config.json", tmp_path / "genai_config.json")
    assert open_decoder(tmp_path / "model.onnx").uses_cache
