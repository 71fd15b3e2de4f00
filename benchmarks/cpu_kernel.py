"""The packed CPU kernel alone: amx_cpu_matmul_packed in a loop, no onnxruntime around it.

    .venv/bin/python benchmarks/cpu_kernel.py [--format amxfp4] [--rows 1 16] [--shape 4096 4096]

On one thread (the C ABI without a runner, plugins/cpu/parallel.h). For A/B runs of a kernel
change (build the other version into a folder and set AMX_EXPORT_LIB_DIR for one of two runs)
and for the fixed cost per call (a tiny N). Weights
are packed once; each figure is the median of as many calls as fit in --repeat-seconds.
"weights GB/s" is the packed weight bytes (codes, plus one byte per scale) over the time: at
M = 1 the kernel reads little else, so it is the figure to hold against the machine's read
bandwidth. Performance claims against onnxruntime's own operators: cpu_matmul.py.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import numpy as np

from amx_export import formats
from amx_export.plugins import library_path
from amx_export.plugins.native import Kernels


def time_calls(handle: int, fmt: str, x: np.ndarray, n: int, budget: float) -> float:
    # the symbol through a handle of its own with plain pointer arguments: Kernels' numpy
    # argument checks cost about 6 us per call, as much as a small layer's whole matmul
    call = ctypes.CDLL(str(library_path("kernels"))).amx_cpu_matmul_packed
    call.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int64,
                     ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
    y = np.empty((x.shape[0], n), np.float32)
    args = (handle, fmt.encode(), x.ctypes.data, x.shape[0], None, y.ctypes.data)
    for _ in range(3):
        call(*args)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < budget or len(times) < 5:
        t = time.perf_counter()
        call(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", default="amxfp4", choices=formats.names())
    parser.add_argument("--rows", type=int, nargs="+", default=[1], help="the M values to time")
    parser.add_argument("--shape", type=int, nargs=2, default=[4096, 4096], metavar=("K", "N"))
    parser.add_argument("--repeat-seconds", type=float, default=1.0)
    args = parser.parse_args()
    k, n = args.shape
    kernels = Kernels()
    rng = np.random.default_rng(0)
    q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), args.format)
    codes, scales = np.ascontiguousarray(q.codes), np.ascontiguousarray(q.scales)
    g = float(q.tensor_scale) if q.tensor_scale is not None else 1.0
    handle = kernels.lib.amx_cpu_pack_weights(args.format.encode(), codes, scales, g, n, k)
    if not handle:
        parser.error(f"amx_cpu_pack_weights refused {args.format} at K={k}, N={n}")
    weight_bytes = codes.nbytes + scales.size  # one byte per scale code in the packed layout
    print(f"# {kernels.isa()}, {args.format}, K x N = {k} x {n}, "
          f"{weight_bytes / 1e6:.1f} MB of packed weights")  # fmt: skip
    print("\n| M | us per call | weights GB/s |\n|---:|---:|---:|")
    try:
        for m in args.rows:
            x = rng.standard_normal((m, k)).astype(np.float32)
            seconds = time_calls(handle, args.format, x, n, args.repeat_seconds)
            print(f"| {m} | {seconds * 1e6:.1f} | {weight_bytes / seconds / 1e9:.1f} |")
    finally:
        kernels.lib.amx_cpu_free_packed(handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
