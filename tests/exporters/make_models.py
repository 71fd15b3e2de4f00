"""Small ONNX fixtures made by the real exporters: Optimum, onnxruntime-genai, TorchScript.

Run by ``scripts/exporter_models.sh``, once in each exporter's virtualenv (the project's own
.venv carries onnxruntime-genai, a test dependency):

    .venv-exporters/bin/python tests/exporters/make_models.py --env exporters --out DIR [NAME...]
    .venv/bin/python tests/exporters/make_models.py --env genai --out DIR [NAME...]
    .venv-exporters/bin/python tests/exporters/make_models.py --table --out DIR

Every model is made from a config with random weights (fixed seeds) and a tokenizer trained
here on a few sentences: nothing comes from a hub. Each fixture is made in a temporary folder,
checked (onnx.checker, and a run in stock onnxruntime against the PyTorch model it came from,
prompt and one decode step for the models with past key values), then moved to DIR/NAME with
``fixture.json`` (what the table shows) and a stamp; a fixture whose stamp matches the hash of
this file, the shell script and the requirements is not made again (``--force`` remakes).
A failed export or check exits 1.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY_FILES = [
    "scripts/exporter_models.sh",
    "tests/exporters/make_models.py",
    "tests/exporters/requirements-exporters.txt",
    "pyproject.toml",  # the project's .venv makes the genai fixtures
]
SRC = "_src"  # the transformers folders the exporters read, under --out

# tiny configs: every fixture is well under 2 MB. initializer_range 0.2 (not transformers'
# 0.02): with 0.02 the attention scores are ~1e-4, softmax is uniform and the logits do not
# depend on the positions at all after 4-bit quantization, which would hide attention bugs
LLAMA = dict(
    vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    bos_token_id=0, eos_token_id=1, pad_token_id=1, tie_word_embeddings=False,
    initializer_range=0.2,
)  # fmt: skip
BERT = dict(
    vocab_size=384, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=128, max_position_embeddings=128, num_labels=3, initializer_range=0.2,
)  # fmt: skip
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Exported graphs come from real exporters, with their own habits.",
    "Hello world, this is a tiny tokenizer for tests.",
    "AMXFP4 keeps one scale for the positive and one for the negative values of a block.",
    "Language models predict the next token from the ones before it.",
]


def stamp_key() -> str:
    digest = hashlib.sha1()
    for name in KEY_FILES:
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- source models (transformers)


def _bpe_tokenizer():
    """A byte-level BPE tokenizer (300 tokens) trained on SENTENCES, as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(SENTENCES * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="</s>",
    )  # fmt: skip


def _wordpiece_tokenizer(folder: Path):
    """A BERT WordPiece tokenizer from a vocabulary written here (letters, digits, words)."""
    from transformers import BertTokenizerFast

    words = sorted({w.strip(".,").lower() for s in SENTENCES for w in s.split()} - {""})
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters]
    vocab += [f"##{c}" for c in letters[:36]] + words
    vocab = list(dict.fromkeys(vocab))  # single letters are words too
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(path))


def make_source(name: str, folder: Path) -> None:
    import torch
    import transformers as tf

    folder.mkdir(parents=True)
    torch.manual_seed(0)
    if name == "llama":
        tf.LlamaForCausalLM(tf.LlamaConfig(**LLAMA)).eval().save_pretrained(folder)
        _bpe_tokenizer().save_pretrained(folder)
    elif name in ("bert", "bert-cls"):
        cls = tf.BertModel if name == "bert" else tf.BertForSequenceClassification
        cls(tf.BertConfig(**BERT)).eval().save_pretrained(folder)
        _wordpiece_tokenizer(folder).save_pretrained(folder)
    else:
        raise ValueError(name)


def load_source(name: str, folder: Path):
    import transformers as tf

    cls = {
        "llama": tf.LlamaForCausalLM,
        "bert": tf.BertModel,
        "bert-cls": tf.BertForSequenceClassification,
    }[name]
    return cls.from_pretrained(folder).eval()


# ---------------------------------------------------------------- exporters


def optimum_export(src: Path, out: Path, task: str, **kwargs) -> None:
    from optimum.exporters.onnx import main_export

    main_export(str(src), str(out), task=task, library_name="transformers", **kwargs)


def make_optimum_llama(opset: int | None):
    def make(src: Path, out: Path) -> str:
        optimum_export(src, out, "text-generation-with-past", opset=opset)
        return "model.onnx"

    return make


def make_optimum_merged(src: Path, out: Path) -> str:
    """decoder_model.onnx (no past in, present out), decoder_with_past_model.onnx and their
    merge by optimum's own utility into decoder_model_merged.onnx (one If node), the layout
    older Optimum wrote."""
    from optimum.exporters.onnx.model_configs import LlamaOnnxConfig
    from optimum.onnx import merge_decoders
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(src)
    no_past = LlamaOnnxConfig(
        config, task="text-generation", use_past=True, use_past_in_inputs=False
    )
    scratch = out / "_scratch"
    optimum_export(src, scratch / "no_past", "text-generation-with-past",
                   custom_onnx_configs={"model": no_past})  # fmt: skip
    optimum_export(src, scratch / "with_past", "text-generation-with-past")
    for f in (scratch / "with_past").iterdir():
        if f.suffix != ".onnx":
            shutil.copy(f, out / f.name)
    shutil.copy(scratch / "no_past/model.onnx", out / "decoder_model.onnx")
    shutil.copy(scratch / "with_past/model.onnx", out / "decoder_with_past_model.onnx")
    merge_decoders(
        out / "decoder_model.onnx", out / "decoder_with_past_model.onnx",
        save_path=out / "decoder_model_merged.onnx",
    )  # fmt: skip
    shutil.rmtree(scratch)
    return "decoder_model_merged.onnx"


def make_optimum_encoder(task: str, optimize: str | None = None):
    def make(src: Path, out: Path) -> str:
        optimum_export(src, out, task, **({"optimize": optimize} if optimize else {}))
        return "model.onnx"

    return make


def make_genai(precision: str, *extra_options: str):
    def make(src: Path, out: Path) -> str:
        cache = out.parent / f".{out.name}.cache"
        command = [
            sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src),
            "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(cache),
        ]  # fmt: skip
        if extra_options:
            command += ["--extra_options", *extra_options]
        # the builder stamps producer_version with `git rev-parse HEAD` of the folder five
        # levels above its own file, which is our checkout when the venv lives in it: with no
        # git there it takes the wheel's own commit, so that the file does not change with ours
        env = dict(os.environ, GIT_DIR=os.devnull)
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        shutil.rmtree(cache, ignore_errors=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
        return "model.onnx"

    return make


def make_torchscript(opset: int):
    """torch.onnx.export(dynamo=False) of the Llama, input_ids + attention_mask -> logits.

    transformers 4.57 builds its attention mask with torch.vmap, which the TorchScript tracer
    cannot follow ("RuntimeError: unordered_map::at"), and its non-vmap fallback traces the
    sequence length as a constant; so, as a user of this exporter has to, we register a plain
    causal-and-padding mask (tensor ops only) for the export."""

    def make(src: Path, out: Path) -> str:
        import torch
        from transformers import AutoConfig, AutoTokenizer
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

        def traceable_mask(batch_size, cache_position, kv_length, kv_offset=0,
                           mask_function=None, attention_mask=None, **kwargs):  # fmt: skip
            kv = torch.cumsum(torch.ones_like(attention_mask, dtype=torch.int64), -1) - 1
            causal = kv[:, None, None, :] <= cache_position[None, None, :, None]
            return causal & attention_mask[:, None, None, :].bool()

        class Logits(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                return self.model(
                    input_ids=input_ids, attention_mask=attention_mask, use_cache=False
                ).logits

        ALL_MASK_ATTENTION_FUNCTIONS.register("sdpa", traceable_mask)
        model = load_source("llama", src)
        ids = torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(0))
        dyn = {0: "batch", 1: "sequence"}
        torch.onnx.export(
            Logits(model), (ids, torch.ones_like(ids)), str(out / "model.onnx"), dynamo=False,
            opset_version=opset, input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "logits": dyn},
        )  # fmt: skip
        AutoConfig.from_pretrained(src).save_pretrained(out)
        AutoTokenizer.from_pretrained(src).save_pretrained(out)
        return "model.onnx"

    return make


@dataclass
class Fixture:
    name: str
    env: str  # the venv that makes it: "exporters" or "genai"
    source: str  # folder under _src
    make: Callable[[Path, Path], str]  # (source folder, output folder) -> model file name
    what: str
    atol: float = 1e-4  # onnxruntime vs PyTorch (fp32 models)
    og: str | None = None  # "must": onnxruntime_genai must generate; "record": note the result
    # the decode step may fail in a default session and then runs with enable_mem_reuse=False
    # (recorded): the fp16 CPU model's value shapes mislead onnxruntime's buffer reuse
    decode_needs_no_mem_reuse: bool = False


FIXTURES = [
    Fixture(
        "optimum-llama",
        "exporters",
        "llama",
        make_optimum_llama(None),
        "Optimum text-generation-with-past, default opset",
    ),
    Fixture(
        "optimum-llama-opset14",
        "exporters",
        "llama",
        make_optimum_llama(14),
        "Optimum text-generation-with-past, --opset 14",
    ),
    Fixture(
        "optimum-llama-merged",
        "exporters",
        "llama",
        make_optimum_merged,
        "decoder_model_merged.onnx (optimum.onnx.merge_decoders)",
    ),
    Fixture(
        "optimum-bert",
        "exporters",
        "bert",
        make_optimum_encoder("feature-extraction"),
        "Optimum feature-extraction, BertModel",
    ),
    Fixture(
        "optimum-bert-o2",
        "exporters",
        "bert",
        make_optimum_encoder("feature-extraction", "O2"),
        "Optimum --optimize O2",
    ),
    Fixture(
        "optimum-bert-o3",
        "exporters",
        "bert",
        make_optimum_encoder("feature-extraction", "O3"),
        "Optimum --optimize O3 (FastGelu)",
        atol=1e-2,
    ),
    Fixture(
        "optimum-bert-cls",
        "exporters",
        "bert-cls",
        make_optimum_encoder("text-classification"),
        "Optimum text-classification, BertForSequenceClassification",
    ),
    Fixture(
        "genai-llama-fp32",
        "genai",
        "llama",
        make_genai("fp32"),
        "onnxruntime-genai builder -p fp32 -e cpu",
        og="must",
    ),
    Fixture(
        "genai-llama-fp32-fused",
        "genai",
        "llama",
        make_genai("fp32", "fuse_mlp_gate_up=true"),
        "onnxruntime-genai builder -p fp32 -e cpu, fuse_mlp_gate_up=true (one gate-up MatMul)",
        og="must",
    ),
    Fixture(
        "genai-llama-fp16",
        "genai",
        "llama",
        make_genai("fp16"),
        "onnxruntime-genai builder -p fp16 -e cpu",
        atol=5e-2,
        og="record",
        decode_needs_no_mem_reuse=True,
    ),
    Fixture(
        "genai-llama-int4",
        "genai",
        "llama",
        make_genai("int4"),
        "onnxruntime-genai builder -p int4 -e cpu (MatMulNBits)",
        atol=None,
        og="must",
    ),
    Fixture(
        "torchscript-llama-opset14",
        "exporters",
        "llama",
        make_torchscript(14),
        "torch.onnx.export(dynamo=False), opset 14, logits only",
    ),
    Fixture(
        "torchscript-llama-opset17",
        "exporters",
        "llama",
        make_torchscript(17),
        "torch.onnx.export(dynamo=False), opset 17, logits only",
    ),
]


# ---------------------------------------------------------------- checks


def graph_stats(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops: collections.Counter = collections.Counter()

    def walk(graph):
        for node in graph.node:
            ops[(node.domain or "ai.onnx", node.op_type)] += 1
            for attr in node.attribute:
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    walk(sub)

    walk(model.graph)
    data = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    size = path.stat().st_size + sum((path.parent / f).stat().st_size for f in data)
    count = lambda op: sum(n for (_, t), n in ops.items() if t == op)  # noqa: E731
    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "ir_version": model.ir_version,
        "size_bytes": size,
        "external_data": sorted(data),
        "nodes_top": len(model.graph.node),
        "nodes": sum(ops.values()),
        "matmul": count("MatMul"),
        "gemm": count("Gemm"),
        "matmul_nbits": count("MatMulNBits"),
        "contrib_ops": sorted({t for (d, t) in ops if d == "com.microsoft"}),
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
    }


def checker(path: Path, full: bool) -> str:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=full)
    except Exception as error:  # the checker raises ValidationError and others
        return "fails: " + str(error).strip().splitlines()[0][:300]
    return "ok"


def _np_type(elem: str):
    import numpy as np

    types = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(bool)": np.bool_,
    }
    return types[elem]


def _feeds(session, ids, past: dict | None, use_cache: bool | None = None, head_dim: int = 0):
    """Inputs for one step: ids [B, S]; past: {name: array} (None: zero-length past)."""
    import numpy as np

    batch, seq = ids.shape
    past_len = next(iter(past.values())).shape[2] if past else 0
    feeds = {}
    for i in session.get_inputs():
        t = _np_type(i.type)
        if i.name == "input_ids":
            feeds[i.name] = ids.astype(t)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((batch, past_len + seq), t)
        elif i.name == "position_ids":
            feeds[i.name] = np.broadcast_to(
                np.arange(past_len, past_len + seq), (batch, seq)
            ).astype(t)
        elif i.name == "token_type_ids":
            feeds[i.name] = np.zeros((batch, seq), t)
        elif i.name == "use_cache_branch":
            feeds[i.name] = np.array([bool(use_cache)])
        elif i.name.startswith("past_key_values."):
            if past:
                feeds[i.name] = past[i.name]
            else:
                # the head size is symbolic ('kv_cache_dim') in onnxruntime-genai's models
                heads = i.shape[1]
                dim = i.shape[3] if isinstance(i.shape[3], int) else head_dim
                feeds[i.name] = np.zeros((batch, heads, 0, dim), t)
        else:
            raise ValueError(f"no rule for the input {i.name} {i.type} {i.shape}")
    return feeds


def run_check(fixture: Fixture, path: Path, src: Path) -> dict:
    """Runs the model in stock onnxruntime and compares it with the PyTorch model: the prompt,
    and for models with past key values one more token fed with the presents."""
    import numpy as np
    import onnxruntime as ort
    import torch

    ort.set_default_logger_severity(4)  # failures are caught and recorded, not logged
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = load_source(fixture.source, src)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 300, (2, 7))
    names = [o.name for o in session.get_outputs()]
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    has_past = any(n.startswith("past_key_values.") for n in (i.name for i in session.get_inputs()))
    result = {"onnxruntime": "runs"}
    with torch.no_grad():
        ref = model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long)
        )
    ref = (ref.logits if hasattr(ref, "logits") else ref.last_hidden_state).numpy()
    outs = dict(
        zip(names, session.run(None, _feeds(session, ids, None, False, head_dim)), strict=True)
    )
    first = outs[names[0]].astype(np.float32)
    diffs = [float(np.abs(first - ref).max())]
    if has_past:
        past = {
            n.replace("present.", "past_key_values."): v
            for n, v in outs.items()
            if n.startswith("present.")
        }
        step = rng.integers(3, 300, (2, 1))
        full = np.concatenate([ids, step], axis=1)
        with torch.no_grad():
            ref2 = model(input_ids=torch.from_numpy(full)).logits[:, -1:].numpy()
        try:
            out2 = session.run(None, _feeds(session, step, past, use_cache=True))[0]
            result["decode_step"] = "runs"
        except Exception as error:
            if not fixture.decode_needs_no_mem_reuse:
                raise
            options = ort.SessionOptions()
            options.enable_mem_reuse = False
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            out2 = session.run(None, _feeds(session, step, past, use_cache=True))[0]
            message = " ".join(str(error).split())[:300]
            result["decode_step"] = f"fails ({message}); runs with enable_mem_reuse=False"
        out2 = out2.astype(np.float32)
        diffs.append(float(np.abs(out2 - ref2).max()))
    result["max_abs_diff_vs_torch"] = diffs
    result["output"] = names[0]
    if not all(np.isfinite(d) for d in diffs):
        raise RuntimeError(f"{fixture.name}: non-finite outputs in onnxruntime")
    if fixture.atol is not None and max(diffs) > fixture.atol:
        raise RuntimeError(
            f"{fixture.name}: onnxruntime vs PyTorch max |diff| {diffs} > {fixture.atol}"
        )
    return result


def og_check(folder: Path) -> str:
    """A few greedy tokens through onnxruntime_genai from the folder's genai_config.json."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.encode("Hello world")
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + 5, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return f"ok: prompt {len(prompt)} tokens, generated {tokens}"


# ---------------------------------------------------------------- driver


def versions(env: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "transformers", "onnx", "onnxruntime"]
    names += ["optimum", "optimum-onnx"] if env == "exporters" else ["onnxruntime-genai"]
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return out


def fresh(folder: Path, key: str) -> bool:
    return (folder / ".stamp").is_file() and (folder / ".stamp").read_text().strip() == key


def publish(tmp: Path, folder: Path, key: str) -> None:
    (tmp / ".stamp").write_text(key + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def ensure_source(out: Path, name: str, key: str, force: bool) -> Path:
    folder = out / SRC / name
    if fresh(folder, key) and not force:
        return folder
    tmp = out / SRC / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    make_source(name, tmp)
    publish(tmp, folder, key)
    return folder


def make_fixture(fixture: Fixture, out: Path, key: str, force: bool) -> tuple[dict, bool]:
    folder = out / fixture.name
    if fresh(folder, key) and not force and (folder / "fixture.json").is_file():
        return json.loads((folder / "fixture.json").read_text()), True
    src = out / SRC / fixture.source
    if not fresh(src, key):
        raise RuntimeError(f"{src} is missing or stale: run the exporters env first")
    tmp = out / f".{fixture.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    began = time.perf_counter()
    model_file = fixture.make(src, tmp)
    seconds = time.perf_counter() - began
    path = tmp / model_file
    info = {"name": fixture.name, "what": fixture.what, "exporter_env": fixture.env}
    info["model"] = f"{fixture.name}/{model_file}"
    info["files"] = sorted(p.name for p in tmp.iterdir())
    info["export_seconds"] = round(seconds, 2)
    info.update(graph_stats(path))
    info["checker"] = checker(path, full=False)
    info["checker_full"] = checker(path, full=True)
    info.update(run_check(fixture, path, src))
    if fixture.og:
        try:
            info["onnxruntime_genai"] = og_check(tmp)
        except Exception as error:
            if fixture.og == "must":
                raise
            info["onnxruntime_genai"] = "fails: " + " ".join(str(error).split())[:400]
    info["versions"] = versions(fixture.env)
    (tmp / "fixture.json").write_text(json.dumps(info, indent=2) + "\n")
    publish(tmp, folder, key)
    return info, False


def line(info: dict, cached: bool | None = None) -> str:
    linear = f"MatMul {info['matmul']} Gemm {info['gemm']}"
    if info.get("matmul_nbits"):
        linear += f" MatMulNBits {info['matmul_nbits']}"
    flags = [] if info["checker"] == "ok" else ["checker FAILS"]
    if info.get("checker_full") not in (None, "ok"):
        flags.append("full_check fails")
    if str(info.get("decode_step", "")).startswith("fails"):
        flags.append("decode step needs enable_mem_reuse=False")
    if str(info.get("onnxruntime_genai", "")).startswith("fails"):
        flags.append("og fails")
    tag = "" if cached is None else (" (cached)" if cached else f" ({info['export_seconds']} s)")
    return (
        f"{info['name']:<27} {info['model']:<50} opset {info['opset']:>2} "
        f"{info['size_bytes'] / 1024:7.1f} KiB  nodes {info['nodes']:>4}  {linear}"
        f"{'  [' + ', '.join(flags) + ']' if flags else ''}{tag}"
    )


def table(out: Path) -> int:
    infos = []
    for fixture in FIXTURES:
        path = out / fixture.name / "fixture.json"
        if path.is_file():
            infos.append(json.loads(path.read_text()))
    (out / "manifest.json").write_text(json.dumps(infos, indent=2) + "\n")
    print(f"== {len(infos)} fixtures in {out} (details: <name>/fixture.json, manifest.json)")
    key = stamp_key()
    for info in infos:
        stale = "" if fresh(out / info["name"], key) else "  (stale: made by another version)"
        print(line(info) + stale)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only these fixtures (default: all)")
    parser.add_argument("--env", choices=["exporters", "genai"])
    parser.add_argument("--out", type=Path, default=ROOT / "build/exporter-models")
    parser.add_argument("--force", action="store_true", help="remake even when stamped")
    parser.add_argument("--table", action="store_true", help="print the table and manifest")
    args = parser.parse_args()
    known = {f.name for f in FIXTURES}
    if unknown := sorted(set(args.names) - known):
        parser.error(f"unknown fixtures {unknown}; known: {sorted(known)}")
    out = args.out.resolve()
    if args.table:
        return table(out)
    if args.env is None:
        parser.error("--env or --table is needed")
    key = stamp_key()
    chosen = [f for f in FIXTURES if f.env == args.env and (not args.names or f.name in args.names)]
    if args.env == "exporters":  # the sources are saved by this env's transformers only
        for source in sorted(
            {f.source for f in FIXTURES if not args.names or f.name in args.names}
        ):
            ensure_source(out, source, key, args.force)
    for fixture in chosen:
        try:
            info, cached = make_fixture(fixture, out, key, args.force)
        except Exception as error:
            print(f"error: fixture {fixture.name} failed: {type(error).__name__}: {error}",
                  file=sys.stderr)  # fmt: skip
            raise
        print(line(info, cached), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
