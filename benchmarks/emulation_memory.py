"""Peak memory of loading an --emulate model in stock onnxruntime, against its float32 model.

    .venv/bin/python benchmarks/emulation_memory.py [--layers 64] [--hidden 2048] [--rows 1 512]

Builds a synthetic float32 model (--layers MatMul + Relu of [hidden, hidden] in a chain,
external data) and its emulation form (python -m amx_export --emulate --include-head, W4A4
--format). Each model is then loaded in a fresh process with default SessionOptions (what
polygraphy or a plain InferenceSession does) and run once per --rows value; the table gives
the file sizes, the peak RSS after the load and after the runs (VmHWM), the load time and
the median time of a call. The models are kept in --folder (build/emulation_memory) and
reused when present: delete them after changing the emulation.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GB = 1e9


def build_float_model(path: Path, layers: int, hidden: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, h = [], [], "x"
    for i in range(layers):  # MatMul, Relu (He-scaled weights keep the activations' size)
        w = (rng.standard_normal((hidden, hidden)) * np.sqrt(2 / hidden)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"layer{i}.weight"))
        nodes.append(helper.make_node("MatMul", [h, f"layer{i}.weight"], [f"m{i}"], f"layer{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}"], f"relu{i}"))
        h = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "rows", hidden])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", "rows", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, path, save_as_external_data=True, location=path.name + ".data")


def file_bytes(model: Path) -> int:
    data = model.with_name(model.name + ".data")
    return model.stat().st_size + (data.stat().st_size if data.exists() else 0)


def peak_rss() -> float:
    """This process's peak RSS in GB: VmHWM, not getrusage's ru_maxrss, which a child process
    inherits from its parent's pages at fork (the parent here holds the model it built)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024 / GB


def measure(path: Path, hidden: int, rows: list[int]) -> dict:
    """In this process: load ``path`` with default options, run it, return the figures."""
    import onnxruntime

    before = peak_rss()
    start = time.perf_counter()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    figures = {"baseline_gb": before, "load_s": time.perf_counter() - start}
    figures["load_rss_gb"] = peak_rss()
    for m in rows:
        x = np.random.default_rng(1).standard_normal((1, m, hidden)).astype(np.float32)
        times = []
        for _ in range(3 if m > 64 else 5):
            start = time.perf_counter()
            session.run(None, {"x": x})
            times.append(time.perf_counter() - start)
        figures[f"call_s_m{m}"] = statistics.median(times)
    figures["run_rss_gb"] = peak_rss()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--format", default="amxfp4")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 512], help="M of the calls")
    parser.add_argument("--folder", type=Path, default=Path("build/emulation_memory"))
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.hidden, args.rows)))
        return 0

    from amx_export.cli import main as amx_export

    args.folder.mkdir(parents=True, exist_ok=True)
    stem = f"chain{args.layers}x{args.hidden}"
    fp32 = args.folder / f"{stem}.onnx"
    emulated = args.folder / f"{stem}.{args.format}.emulated.onnx"
    if not fp32.exists():
        build_float_model(fp32, args.layers, args.hidden)
    if not emulated.exists():
        command = [str(fp32), "--format", args.format, "--include-head", "--emulate"]
        with contextlib.redirect_stdout(io.StringIO()):
            assert amx_export([*command, "-o", str(emulated)]) == 0
    print(f"{args.layers} x MatMul [{args.hidden}, {args.hidden}] + Relu, format {args.format}")
    header = f"{'model':10s} {'file GB':>8s} {'load s':>7s} {'RSS load':>9s} {'RSS run':>8s}"
    print(header + "".join(f" {f'call M={m}':>11s}" for m in args.rows))
    for label, path in (("float32", fp32), ("emulated", emulated)):
        child = [sys.executable, __file__, "--measure", str(path), "--hidden", str(args.hidden)]
        child += ["--rows", *map(str, args.rows)]
        out = subprocess.run(child, check=True, capture_output=True, text=True, env=os.environ)
        f = json.loads(out.stdout.strip().splitlines()[-1])
        line = f"{label:10s} {file_bytes(path) / GB:8.3f} {f['load_s']:7.1f} "
        line += f"{f['load_rss_gb']:8.2f}G {f['run_rss_gb']:7.2f}G"
        print(line + "".join(f" {f[f'call_s_m{m}'] * 1e3:9.1f}ms" for m in args.rows))
    print(f"(RSS of the process before loading: {f['baseline_gb']:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
