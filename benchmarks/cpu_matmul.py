"""amx.MatMul (libamx_ort.so) against onnxruntime's own float32 MatMul and 4-bit MatMulNBits.

    .venv/bin/python benchmarks/cpu_matmul.py [--repeat-seconds 1.0] [--format amxfp4]
        [--rows 1 16] [--isa avx2] [--mlas-isa avx2] [--threads 1] [--weights-only]
        [--copies 8]

One process, one single-node model per operator and shape, the same random X for all;
the fastest of the timed runs of session.run (the least disturbed by other processes on a
shared machine; /proc/loadavg is printed on each line). Baselines: MatMul (float32 weights)
and com.microsoft.MatMulNBits (4-bit weights, block 32, accuracy_level 4: int8 compute),
both with onnxruntime's default threading (or --threads). amx.MatMul is W4A4 (X is quantized
at run time). --isa caps our kernels' tier (AMX_CPU_ISA). onnxruntime's MLAS takes its best
kernels for this CPU (it has no setting to cap them); --mlas-isa avx2 or avx-vnni runs it as
on a CPU without AVX-512 (and, for avx2, without AVX-VNNI): benchmarks/isa_mask.py hides those
features from a copy of onnxruntime, so that both sides run one tier's code on these cores
(the A/B for AVX2-only CPUs on an AVX-512 machine). --weights-only times W4A16 instead
(amx.MatMul with act_format "none": X stays float32) against MatMulNBits at accuracy_level 0
(float32 compute: onnxruntime's weight-only choice). Prints a markdown table with the ratios
(> 1: amx.MatMul is faster).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from amx_export import formats

if TYPE_CHECKING:
    import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
import isa_mask  # noqa: E402

ROWS = (1, 16, 128, 512)
SHAPES = ((4096, 4096), (4096, 11008))


def _model(nodes, inits, k, n):
    outputs = [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, ["m", n])
               for node in nodes]  # fmt: skip
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        outputs, inits,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1),
              helper.make_opsetid("amx", 1)]  # fmt: skip
    return helper.make_model(graph, opset_imports=opsets, ir_version=9).SerializeToString()


def _options(threads: int | None, native: bool = False) -> ort.SessionOptions:
    # onnxruntime imported here, not at the top: main() may mask it first (isa_mask.use)
    import onnxruntime as ort

    from amx_export.ort import session_options

    options = session_options(native=True) if native else ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return options


def models(k: int, n: int, fmt: str, rng, weights_only: bool = False,
           copies: int = 1) -> dict[str, bytes]:  # fmt: skip
    """The three models, serialized: "MatMul fp32", "MatMulNBits", "amx.MatMul", each `copies`
    nodes on X with weights of their own (one node: output y; more: y, y_1, ...).
    weights_only: W4A16 (MatMulNBits with float32 compute, amx.MatMul with X unquantized)."""
    nodes: dict[str, list] = {"MatMul fp32": [], "MatMulNBits": [], "amx.MatMul": []}
    inits: dict[str, list] = {name: [] for name in nodes}
    blocks = k // 32
    for i in range(copies):
        tag = f"_{i}" if i else ""
        w = rng.standard_normal((n, k)).astype(np.float32)
        nodes["MatMul fp32"].append(helper.make_node("MatMul", ["x", "w" + tag], ["y" + tag]))
        inits["MatMul fp32"].append(numpy_helper.from_array(np.ascontiguousarray(w.T), "w" + tag))
        nodes["MatMulNBits"].append(helper.make_node(
            "MatMulNBits", ["x", "b" + tag, "scales" + tag], ["y" + tag], domain="com.microsoft",
            K=k, N=n, bits=4, block_size=32, accuracy_level=0 if weights_only else 4,
        ))  # fmt: skip
        inits["MatMulNBits"] += [
            numpy_helper.from_array(rng.integers(0, 256, (n, blocks, 16), dtype=np.uint8),
                                    "b" + tag),
            numpy_helper.from_array(rng.uniform(0.01, 0.1, n * blocks).astype(np.float32),
                                    "scales" + tag),
        ]  # fmt: skip
        q = formats.quantize(w, fmt)
        nodes["amx.MatMul"].append(helper.make_node(
            "MatMul", ["x", "codes" + tag, "scales" + tag], ["y" + tag], domain="amx",
            weight_format=fmt, act_format="none" if weights_only else fmt, in_features=k,
        ))  # fmt: skip
        inits["amx.MatMul"] += [numpy_helper.from_array(np.asarray(q.codes), "codes" + tag),
                                numpy_helper.from_array(np.asarray(q.scales), "scales" + tag)]
    return {name: _model(nodes[name], inits[name], k, n) for name in nodes}


def sessions(k: int, n: int, fmt: str, rng, threads: int | None, weights_only: bool = False,
             copies: int = 1) -> dict[str, ort.InferenceSession]:  # fmt: skip
    import onnxruntime as ort

    built = models(k, n, fmt, rng, weights_only, copies)
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


def _shape(text: str) -> tuple[int, int]:
    try:
        k, n = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not KxN (e.g. 576x1536)") from None
    if k <= 0 or n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: K and N must be positive")
    return k, n


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
    parser.add_argument(
        "--mlas-isa", choices=isa_mask.TIERS,
        help="run onnxruntime's kernels as on a CPU with this tier at most (isa_mask.py)",
    )  # fmt: skip
    parser.add_argument(
        "--shapes", type=_shape, nargs="+", default=list(SHAPES), metavar="KxN",
        help="the weight shapes to time (default: 4096x4096 4096x11008; SmolLM2's are "
             "576x576 576x192 576x1536 1536x576)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, help="threads for every operator (default: all)")
    parser.add_argument(
        "--copies", type=int, default=1, metavar="L",
        help="L weight matrices per operator, one after another in each call (times are per "
             "matrix): with L x the weights past the L3 cache they come from DRAM, as a "
             "model's layers do in decode (default 1: the weights stay in the caches)",
    )  # fmt: skip
    parser.add_argument(
        "--weights-only", action="store_true",
        help="W4A16: X stays float32 (MatMulNBits at accuracy_level 0, float32 compute)",
    )  # fmt: skip
    args = parser.parse_args()
    # before the libraries load: they read it once
    if args.isa:
        os.environ["AMX_CPU_ISA"] = args.isa
    isa_mask.apply(parser, args.mlas_isa)
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    from amx_export.plugins.native import Kernels

    tier = Kernels().isa()
    if args.isa and tier != args.isa:
        parser.error(f"this CPU has no {args.isa} tier (best at or below it: {tier})")
    threads = args.threads or "all"
    kind = "W4A16, MatMulNBits accuracy_level 0" if args.weights_only else "W4A4"
    if args.copies > 1:
        kind += f", {args.copies} weight matrices per call (times per matrix)"
    mlas = (f"its {args.mlas_isa} kernels, the CPU's AVX-512 hidden by isa_mask.py"
            if args.mlas_isa else "its best kernels for this CPU")  # fmt: skip
    print(f"# {cpu_model()}, onnxruntime {ort.__version__} (MLAS: {mlas}), amx kernels: "
          f"{tier}, {args.format} {kind}, threads: {threads}")  # fmt: skip
    print("\n| K x N | M | MatMul fp32 (ms) | MatMulNBits (ms) | amx.MatMul (ms) "
          "| vs MatMul | vs MatMulNBits | amx tier | MLAS tier | CPU | load |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|")
    for k, n in args.shapes:
        runs = sessions(k, n, args.format, rng, args.threads, args.weights_only, args.copies)
        if args.mlas_isa and isa_mask.traps() == 0:
            raise SystemExit("--mlas-isa: onnxruntime never read CPUID through the masked copy")
        for m in args.rows:
            x = rng.standard_normal((m, k)).astype(np.float32)
            t = {name: min_seconds(s, x, args.repeat_seconds) / args.copies
                 for name, s in runs.items()}  # fmt: skip
            fp32, nbits, amx = t["MatMul fp32"], t["MatMulNBits"], t["amx.MatMul"]
            cells = [f"{k}x{n}", str(m), f"{fp32 * 1e3:.3g}", f"{nbits * 1e3:.3g}",
                     f"{amx * 1e3:.3g}", f"{fp32 / amx:.2f}x", f"{nbits / amx:.2f}x",
                     tier, args.mlas_isa or "best", cpu_model(), load_average()]  # fmt: skip
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
