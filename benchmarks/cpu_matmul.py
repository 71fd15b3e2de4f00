"""amx.MatMul (libamx_ort.so) against onnxruntime's own float32 MatMul and 4-bit MatMulNBits.

    .venv/bin/python benchmarks/cpu_matmul.py [--repeat-seconds 1.0] [--format amxfp4]
        [--rows 1 16] [--isa avx2] [--threads 1] [--weights-only]

One process, one single-node model per operator and shape, the same random X for all;
the fastest of the timed runs of session.run (the least disturbed by other processes on a
shared machine; /proc/loadavg is printed on each line). Baselines: MatMul (float32 weights)
and com.microsoft.MatMulNBits (4-bit weights, block 32, accuracy_level 4: int8 compute),
both with onnxruntime's default threading (or --threads). amx.MatMul is W4A4 (X is quantized
at run time). --isa caps our kernels' tier (AMX_CPU_ISA); onnxruntime's MLAS always takes
its best kernels for this CPU (it has no setting to cap them), so an --isa below the CPU's
best is a conservative A/B. --weights-only times W4A16 instead (amx.MatMul with
act_format "none": X stays float32) against MatMulNBits at accuracy_level 0 (float32 compute:
onnxruntime's weight-only choice). Prints a markdown table with the ratios (> 1: amx.MatMul
is faster).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from amx_export import formats
from amx_export.ort import session_options

ROWS = (1, 16, 128, 512)
SHAPES = ((4096, 4096), (4096, 11008))


def _model(node, inits, k, n):
    graph = helper.make_graph(
        [node], "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        inits,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1),
              helper.make_opsetid("amx", 1)]  # fmt: skip
    return helper.make_model(graph, opset_imports=opsets, ir_version=9).SerializeToString()


def _options(threads: int | None, native: bool = False) -> ort.SessionOptions:
    options = session_options(native=True) if native else ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return options


def models(k: int, n: int, fmt: str, rng, weights_only: bool = False) -> dict[str, bytes]:
    """The three single-node models, serialized: "MatMul fp32", "MatMulNBits", "amx.MatMul".
    weights_only: W4A16 (MatMulNBits with float32 compute, amx.MatMul with X unquantized)."""
    w = rng.standard_normal((n, k)).astype(np.float32)
    fp32 = _model(
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        [numpy_helper.from_array(np.ascontiguousarray(w.T), "w")], k, n,
    )  # fmt: skip
    blocks = k // 32
    nbits = _model(
        helper.make_node(
            "MatMulNBits", ["x", "b", "scales"], ["y"], domain="com.microsoft",
            K=k, N=n, bits=4, block_size=32, accuracy_level=0 if weights_only else 4,
        ),
        [numpy_helper.from_array(rng.integers(0, 256, (n, blocks, 16), dtype=np.uint8), "b"),
         numpy_helper.from_array(rng.uniform(0.01, 0.1, n * blocks).astype(np.float32), "scales")],
        k, n,
    )  # fmt: skip
    q = formats.quantize(w, fmt)
    amx = _model(
        helper.make_node(
            "MatMul", ["x", "codes", "scales"], ["y"], domain="amx",
            weight_format=fmt, act_format="none" if weights_only else fmt, in_features=k,
        ),
        [numpy_helper.from_array(np.asarray(q.codes), "codes"),
         numpy_helper.from_array(np.asarray(q.scales), "scales")],
        k, n,
    )  # fmt: skip
    return {"MatMul fp32": fp32, "MatMulNBits": nbits, "amx.MatMul": amx}


def sessions(k: int, n: int, fmt: str, rng, threads: int | None,
             weights_only: bool = False) -> dict[str, ort.InferenceSession]:  # fmt: skip
    built = models(k, n, fmt, rng, weights_only)
    return {
        "MatMul fp32": ort.InferenceSession(built["MatMul fp32"], _options(threads)),
        "MatMulNBits": ort.InferenceSession(built["MatMulNBits"], _options(threads)),
        "amx.MatMul": ort.InferenceSession(built["amx.MatMul"], _options(threads, native=True)),
    }


def call_seconds(session, x, budget: float) -> list[float]:
    """The time of each run over ``budget`` seconds (at least 5), after 2 warm-up runs."""
    for _ in range(2):
        session.run(None, {"x": x})
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < budget or len(times) < 5:
        t = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - t)
    return times


def min_seconds(session, x, budget: float) -> float:
    return min(call_seconds(session, x, budget))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat-seconds", type=float, default=1.0)
    parser.add_argument("--format", default="amxfp4", choices=formats.names())
    parser.add_argument(
        "--rows", type=int, nargs="+", default=list(ROWS), help="the M values to time"
    )
    parser.add_argument(
        "--isa", choices=["portable", "avx2", "avx-vnni", "avx512-vnni"],
        help="cap amx.MatMul's kernel tier (default: the CPU's best)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, help="threads for every operator (default: all)")
    parser.add_argument(
        "--weights-only", action="store_true",
        help="W4A16: X stays float32 (MatMulNBits at accuracy_level 0, float32 compute)",
    )  # fmt: skip
    args = parser.parse_args()
    # before the libraries load: they read it once
    if args.isa:
        os.environ["AMX_CPU_ISA"] = args.isa
    rng = np.random.default_rng(0)
    from amx_export.plugins.native import Kernels

    tier = Kernels().isa()
    if args.isa and tier != args.isa:
        parser.error(f"this CPU has no {args.isa} tier (best at or below it: {tier})")
    threads = args.threads or "all"
    kind = "W4A16, MatMulNBits accuracy_level 0" if args.weights_only else "W4A4"
    print(f"# {cpu_model()}, onnxruntime {ort.__version__} (MLAS: its best kernels for this "
          f"CPU), amx kernels: {tier}, {args.format} {kind}, threads: {threads}")  # fmt: skip
    print("\n| K x N | M | MatMul fp32 (ms) | MatMulNBits (ms) | amx.MatMul (ms) "
          "| vs MatMul | vs MatMulNBits | amx tier | CPU | load |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for k, n in SHAPES:
        runs = sessions(k, n, args.format, rng, args.threads, args.weights_only)
        for m in args.rows:
            x = rng.standard_normal((m, k)).astype(np.float32)
            t = {name: min_seconds(s, x, args.repeat_seconds) for name, s in runs.items()}
            fp32, nbits, amx = t["MatMul fp32"], t["MatMulNBits"], t["amx.MatMul"]
            cells = [f"{k}x{n}", str(m), f"{fp32 * 1e3:.3g}", f"{nbits * 1e3:.3g}",
                     f"{amx * 1e3:.3g}", f"{fp32 / amx:.2f}x", f"{nbits / amx:.2f}x",
                     tier, cpu_model(), load_average()]  # fmt: skip
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
