"""Text generation speed of SmolLM2-135M: what a user gains per token, side by side in one process.

    .venv/bin/python benchmarks/decode.py [--repeats 5] [--prompt-tokens 128] [--new-tokens 128]
                                          [--threads 2] [--work build/decode-bench] [--no-genai]
                                          [--isa avx2 --mlas-isa avx2]
                                          [--also NAME=MODEL ...]

Variants, all from the same export (`python -m amx_export export smollm2`, KV cache):
  fp32        the float32 model in onnxruntime
  matmulnbits onnxruntime's own 4-bit weights on the same graph (matmul_nbits_quantizer, block
              32, accuracy_level 4: what an onnxruntime user picks today), the same layers as ours
  fp32-rotary, matmulnbits-rotary  the same two with the rotary embeddings fused as our rewrite
              fuses them (graph_passes/rotary.py alone): the fusion's own share, and baselines
              on the same attention graph as ours
  amxfp4      our W4A4 AMXFP4 on the custom ops (libamx_ort.so)
  amxfp4-w4a16 our weight-only AMXFP4 on the custom ops
  emulation   our W4A4 AMXFP4 lowered to standard ONNX ops
each run by our decode loop (amx_export.generation); and the same five made from the
onnxruntime-genai builder's SmolLM2 graph (-p fp32 -e cpu; ours rewritten by the main command,
which writes the folder's genai_config.json) in og.Generator.

Batch 1, greedy, no early stop. --busy N runs the rounds beside N processes that each spin on a
core. Timing: the variants take turns, one generation each per round,
and each figure is the median over rounds. Size on disk: the model file and its data. Peak RSS:
one child process per variant that loads the model and generates once (ru_maxrss), so no
variant's memory counts for another. The models are made once under --work and reused.
--isa caps our kernels' tier; --mlas-isa runs onnxruntime (MLAS, and onnxruntime-genai, which
loads the same package) as on a CPU without AVX-512 (benchmarks/isa_mask.py): with both, the
figures of an AVX2-only (or AVX-VNNI) CPU on this one's cores.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import isa_mask  # noqa: E402  (imports no onnxruntime: --mlas-isa must mask it first)

ROOT = Path(__file__).resolve().parents[1]
OURS = ("fp32", "fp32-rotary", "matmulnbits", "matmulnbits-rotary", "amxfp4", "amxfp4-w4a16",
        "emulation")
GENAI = ("genai-fp32", "genai-matmulnbits", "genai-amxfp4", "genai-amxfp4-w4a16", "genai-emulation")
PROMPT_SOURCE = "wikipedia"  # amx_export.text: real prose, installed offline


def _cli(*args: str) -> None:
    """One amx_export command in a child process (its imports stay out of ours)."""
    command = [sys.executable, "-m", "amx_export", *args]
    print("  $", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def _matmulnbits(source: Path, output: Path, keep: set[str]) -> None:
    """onnxruntime's 4-bit weights, block 32, accuracy_level 4, except the nodes in ``keep``."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)

    print(f"  matmul_nbits_quantizer {source.name} -> {output.name}", flush=True)
    model = onnx.load(str(source))
    quantizer = MatMulNBitsQuantizer(
        model, block_size=32, accuracy_level=4, nodes_to_exclude=sorted(keep)
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(output), use_external_data_format=False)


def _fuse_rotary(source: Path, output: Path) -> None:
    """``source`` with only its rotary embeddings fused (FuseRotaryPass, then CleanupPass)."""
    import onnx_ir as ir

    from amx_export.graph_passes.cleanup import CleanupPass
    from amx_export.graph_passes.rotary import FuseRotaryPass

    print(f"  fusing the rotary embeddings {source.name} -> {output.name}", flush=True)
    model = ir.load(source)
    fused = FuseRotaryPass()
    if not fused(model).modified:
        raise SystemExit(f"{source}: no rotary embedding to fuse")
    CleanupPass()(model)
    ir.save(model, output)


def _skipped_nodes(report: Path) -> set[str]:
    """The nodes our rewrite kept in full precision (the head), from its --report JSON."""
    data = json.loads(report.read_text())
    return {layer["name"] for layer in data["layers_skipped"]}


def prepare(work: Path, genai: bool) -> dict[str, Path]:
    """The models, made once under ``work``; returns variant -> model file (or genai folder)."""
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32.onnx"
    if not fp32.exists():
        _cli("export", "smollm2", "-o", str(fp32))
    paths = {"fp32": fp32}
    for name, extra in (("amxfp4", []), ("amxfp4-w4a16", ["--weights-only"]),
                        ("emulation", ["--emulate"])):  # fmt: skip
        paths[name] = work / f"{name}.onnx"
        if not paths[name].exists():
            _cli(str(fp32), "-o", str(paths[name]), "--report", str(work / f"{name}.json"), *extra)
    paths["matmulnbits"] = work / "matmulnbits.onnx"
    if not paths["matmulnbits"].exists():
        _matmulnbits(fp32, paths["matmulnbits"], _skipped_nodes(work / "amxfp4.json"))
    for name in ("fp32", "matmulnbits"):
        paths[f"{name}-rotary"] = work / f"{name}-rotary.onnx"
        if not paths[f"{name}-rotary"].exists():
            _fuse_rotary(paths[name], paths[f"{name}-rotary"])
    if genai:
        paths.update(_prepare_genai(work))
    return paths


def _refresh_library(folder: Path) -> None:
    """The folder's copy of libamx_ort.so (the main command bundles one for onnxruntime-genai)
    replaced by the current build where they differ: a cached folder would otherwise time the
    kernels of the session that made it. By rename, never in place (a loaded library)."""
    from amx_export.plugins import library_path

    bundled, built = folder / "libamx_ort.so", Path(library_path("ort"))
    if bundled.exists() and built.exists() and not filecmp.cmp(bundled, built, shallow=False):
        staged = bundled.with_name(bundled.name + ".new")
        shutil.copyfile(built, staged)
        os.replace(staged, bundled)


def _prepare_genai(work: Path) -> dict[str, Path]:
    """SmolLM2 through onnxruntime-genai's builder (fp32), then the 4-bit forms of that graph."""
    hf = work / "smollm2-hf"
    if not (hf / "config.json").exists():
        print("  saving SmolLM2 as a transformers folder for the builder", flush=True)
        subprocess.run([sys.executable, __file__, "--save-hf", str(hf)], check=True, cwd=ROOT)
    fp32 = work / "genai-fp32"
    if not (fp32 / "genai_config.json").exists():
        command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf),
                   "-o", str(fp32), "-p", "fp32", "-e", "cpu",
                   "-c", str(work / "genai-cache")]  # fmt: skip
        print("  $", " ".join(command[1:]), flush=True)
        env = dict(os.environ, GIT_DIR=os.devnull)  # see tests/exporters/make_models.py
        subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True)
    paths = {"genai-fp32": fp32}
    for name, extra in (("genai-amxfp4", []), ("genai-amxfp4-w4a16", ["--weights-only"]),
                        ("genai-emulation", ["--emulate"])):  # fmt: skip
        folder = paths[name] = work / name
        if not (folder / "genai_config.json").exists():
            folder.mkdir(exist_ok=True)
            # the main command writes the folder's genai_config.json with our library in it
            _cli(str(fp32 / "model.onnx"), "-o", str(folder / "model.onnx"),
                 "--report", str(work / f"{name}.json"), *extra)  # fmt: skip
        _refresh_library(folder)
    nbits = work / "genai-matmulnbits"
    if not (nbits / "genai_config.json").exists():
        shutil.copytree(fp32, nbits, ignore=shutil.ignore_patterns("model.onnx*"))
        _matmulnbits(fp32 / "model.onnx", nbits / "model.onnx",
                     _skipped_nodes(work / "genai-amxfp4.json"))  # fmt: skip
    paths["genai-matmulnbits"] = nbits
    return paths


def save_hf(folder: Path) -> None:
    """SmolLM2 as a plain transformers folder: a GGUF-loaded model refuses save_pretrained, so
    its float32 weights go into a model made from its config."""
    from transformers import AutoModelForCausalLM

    from amx_export.models import load_smollm2

    model, tokenizer = load_smollm2()
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def prompt_ids(tokens: int) -> list[int]:
    from amx_export.models import load_tokenizer
    from amx_export.text import load_text

    tokenizer = load_tokenizer("smollm2")
    text = load_text(PROMPT_SOURCE)[:20000]
    ids = tokenizer(text)["input_ids"][:tokens]
    if len(ids) < tokens:
        raise SystemExit(f"the prompt text gives only {len(ids)} tokens")
    return ids


@dataclass
class Run:
    prefill_seconds: float
    decode_seconds: float
    decode_tokens: int  # tokens produced after the first


class OurLoop:
    """A model in amx_export.generation's decode loop."""

    def __init__(self, path: Path, threads: int):
        from amx_export.generation import open_decoder

        self.decoder = open_decoder(path, threads=threads)
        self.how = self.decoder.amx_nodes

    def run(self, prompt: list[int], new_tokens: int) -> Run:
        result = self.decoder.generate(prompt, max_new_tokens=new_tokens)
        return Run(result.prefill_seconds, result.decode_seconds, len(result.tokens) - 1)


class GenaiLoop:
    """A model folder in onnxruntime-genai's og.Generator (its config sets the threads)."""

    def __init__(self, folder: Path, threads: int):
        import onnxruntime_genai as og

        config = og.Config(str(folder))
        config.clear_providers()
        self.model = og.Model(config)
        self.og = og
        self.threads = threads
        self.how = "onnxruntime-genai"

    def run(self, prompt: list[int], new_tokens: int) -> Run:
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(
            max_length=len(prompt) + new_tokens, min_length=len(prompt) + new_tokens,
            do_sample=False,
        )  # fmt: skip
        generator = og.Generator(self.model, params)
        start = time.perf_counter()
        generator.append_tokens(prompt)  # runs the prompt (prefill)
        generator.get_next_tokens()
        first = time.perf_counter()
        steps = 0
        while not generator.is_done():
            generator.generate_next_token()
            steps += 1
        end = time.perf_counter()
        return Run(first - start, end - first, steps - 1)


def open_variant(name: str, path: Path, threads: int):
    return GenaiLoop(path, threads) if name.startswith("genai-") else OurLoop(path, threads)


def disk_bytes(path: Path) -> int:
    files = path.glob("*.onnx*") if path.is_dir() else [path, path.with_name(path.name + ".data")]
    return sum(f.stat().st_size for f in files if f.is_file())


def child_rss(name: str, path: Path, args) -> float:
    """Peak RSS in MiB of a child process that opens ``name`` and generates once."""
    command = [sys.executable, __file__, "--child", name, str(path),
               "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens),
               "--threads", str(args.threads)]  # fmt: skip
    if args.mlas_isa:
        command += ["--mlas-isa", args.mlas_isa]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return float(out.strip().splitlines()[-1])


def run_child(name: str, path: Path, args) -> None:
    prompt = prompt_ids(args.prompt_tokens)
    open_variant(name, path, args.threads).run(prompt, args.new_tokens)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec from the parent
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            print(int(line.split()[1]) / 1024)


def cpu_line(mlas_isa: str | None = None) -> str:
    from amx_export.plugins.native import Kernels

    model = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = Path("/proc/loadavg").read_text().split()[:3]
    tier = Kernels().isa()
    mlas = f"its {mlas_isa}, AVX-512 hidden (isa_mask.py)" if mlas_isa else "its best"
    return (f"{model}, {os.cpu_count()} cores, our CPU tier {tier}, onnxruntime's kernels {mlas}"
            f", load average {' '.join(load)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds over the variants")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "decode-bench")
    parser.add_argument("--no-genai", action="store_true", help="skip onnxruntime-genai")
    parser.add_argument(
        "--busy", type=int, default=0, metavar="N",
        help="time beside N child processes that each spin on a core (users run other work)",
    )  # fmt: skip
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS children")
    parser.add_argument("--variants", nargs="+", help="a subset of the variants")
    parser.add_argument("--prepare-only", action="store_true", help="make the models and stop")
    parser.add_argument(
        "--also", nargs="+", default=[], metavar="NAME=MODEL",
        help="more decoders in the same rounds (A/B: e.g. amxfp4-old=OLD/amxfp4.onnx; a "
             "NAME starting genai- is an onnxruntime-genai folder)",
    )  # fmt: skip
    parser.add_argument(
        "--isa", choices=("portable", "avx2", "avx-vnni", "avx512-vnni"),
        help="cap our kernels' instruction set (AMX_CPU_ISA) for A/B runs",
    )  # fmt: skip
    parser.add_argument(
        "--mlas-isa", choices=isa_mask.TIERS,
        help="run onnxruntime's own kernels as on a CPU with this tier at most (isa_mask.py)",
    )  # fmt: skip
    parser.add_argument("--save-hf", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("NAME", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.isa:
        os.environ["AMX_CPU_ISA"] = args.isa  # read when our libraries load
    if args.mlas_isa:  # before anything imports onnxruntime
        isa_mask.apply(parser, args.mlas_isa)
    if args.save_hf:
        return save_hf(args.save_hf)
    if args.child:
        return run_child(args.child[0], Path(args.child[1]), args)

    print("preparing the models (once, under", args.work, ")", flush=True)
    paths = prepare(args.work, genai=not args.no_genai)
    if args.prepare_only:
        return
    names = [n for n in (*OURS, *GENAI) if n in paths and (not args.variants or n in args.variants)]
    for extra in args.also:
        name, _, model = extra.partition("=")
        if not model or name in paths or not Path(model).exists():
            parser.error(f"--also {extra!r}: want a new NAME=MODEL with an existing MODEL")
        paths[name] = Path(model)
        names.append(name)
    prompt = prompt_ids(args.prompt_tokens)
    loops = {name: open_variant(name, paths[name], args.threads) for name in names}
    for loop in loops.values():  # warm-up: first-run packing and allocations
        loop.run(prompt[:16], 4)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        for round_ in range(args.repeats):
            for name, loop in loops.items():
                runs[name].append(loop.run(prompt, args.new_tokens))
            print(f"round {round_ + 1}/{args.repeats} done", flush=True)
        machine = cpu_line(args.mlas_isa)  # the load average with the hogs still running
    finally:
        for hog in hogs:
            hog.kill()
    rss = {} if args.no_rss else {name: child_rss(name, paths[name], args) for name in names}
    print_table(names, runs, loops, paths, rss, args, machine)


def print_table(names, runs, loops, paths, rss, args, machine) -> None:
    def median_rate(name, which):
        rates = [
            (args.prompt_tokens / r.prefill_seconds) if which == "prefill"
            else (r.decode_tokens / r.decode_seconds)
            for r in runs[name]
        ]  # fmt: skip
        return statistics.median(rates)

    print()
    busy = f"; beside {args.busy} spinning process(es)" if args.busy else ""
    print(f"Machine: {machine}{busy}")
    print(f"Command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"Batch 1, {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens (greedy), "
          f"{args.threads} threads, median of {args.repeats} rounds.\n")  # fmt: skip
    header = ("| variant | runtime | prefill tok/s | decode tok/s | decode vs fp32 "
              "| decode vs MatMulNBits | prefill vs MatMulNBits | size on disk (MB) "
              "| peak RSS (MiB) | decode vs fp32-rotary | decode vs MatMulNBits-rotary |")
    print(header)
    print("|---|---|" + "---:|" * 9)
    for name in names:
        base = "genai-" if name.startswith("genai-") else ""
        fp32, nbits = base + "fp32", base + "matmulnbits"
        decode, prefill = median_rate(name, "decode"), median_rate(name, "prefill")

        def ratio(other, rate, which):
            return f"{rate / median_rate(other, which):.2f}x" if other in runs else "-"

        print(
            f"| {name} | {loops[name].how} | {prefill:.0f} | {decode:.1f} "
            f"| {ratio(fp32, decode, 'decode')} | {ratio(nbits, decode, 'decode')} "
            f"| {ratio(nbits, prefill, 'prefill')} | {disk_bytes(paths[name]) / 1e6:.0f} "
            f"| {rss.get(name, float('nan')):.0f} "
            f"| {ratio('fp32-rotary', decode, 'decode') if not base else '-'} "
            f"| {ratio('matmulnbits-rotary', decode, 'decode') if not base else '-'} |"
        )


if __name__ == "__main__":
    main()
