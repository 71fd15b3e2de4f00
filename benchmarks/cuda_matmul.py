"""amx_cuda_matmul (plugins/cuda/) against cuBLAS and against the memory-bandwidth limit.

    .venv/bin/python benchmarks/cuda_matmul.py [--format amxfp4] [--dtype float16]
        [--weights-only] [--repeat-seconds 0.5]

One process, the same random X for every kernel; each kernel is timed as 50 calls captured
in a CUDA graph and replayed between CUDA events (median of replays). Baselines:
- cuBLAS: torch.matmul(X, Wᵀ) with full-precision float16 and bfloat16 weights;
- bandwidth: the bytes a matmul must move (packed weights + X + Y) divided by our time, as a
  fraction of a measured device-to-device copy (read + write of 1 GiB). At M = 1 this is
  the figure that matters: decode reads every weight once.
Ratios > 1 mean ours is faster. Without a usable GPU it prints why and exits 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial

import numpy as np

from amx_export import formats
from amx_export.plugins.cuda import CudaKernels, DeviceWeights, unavailable_reason

ROWS = (1, 16, 128, 512, 2048)
SHAPES = ((4096, 4096), (4096, 11008))


def median_seconds(fn, budget: float, calls: int = 50) -> float:
    """Median time of one call of fn: `calls` calls captured in a CUDA graph (so Python and
    launch overhead stay out of the figure), replayed between CUDA events until `budget`
    seconds have been spent (at least 5 times)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the capture, as torch requires
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times, spent = [], 0.0
    while spent < budget or len(times) < 5:
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        times.append(seconds / calls)
        spent += seconds
    return statistics.median(times)


def copy_bandwidth(budget: float) -> float:
    """Bytes per second of a device-to-device copy (read + write)."""
    import torch

    size = 1 << 30
    a = torch.empty(size, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    seconds = median_seconds(lambda: b.copy_(a), budget, calls=4)
    return 2 * size / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", default="amxfp4", choices=formats.names())
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--weights-only", action="store_true", help="W4A16 instead of W4A4")
    parser.add_argument("--repeat-seconds", type=float, default=0.5)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"cuda_matmul: cannot run: {reason}", file=sys.stderr)
        return 2

    import torch

    kernels = CudaKernels()
    dtype = getattr(torch, args.dtype)
    act = None if args.weights_only else args.format
    bandwidth = copy_bandwidth(args.repeat_seconds)
    print(f"device: {torch.cuda.get_device_name()}; copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    mode = "W4A16" if args.weights_only else "W4A4"
    print(f"amx: {args.format} {mode}, X and Y {args.dtype}; cuBLAS: torch.matmul\n")
    print("| M | K x N | amx (us) | cuBLAS fp16 (us) | cuBLAS bf16 (us) | vs fp16 | vs bf16 "
          "| amx TFLOP/s | bandwidth |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for k, n in SHAPES:
        w32 = rng.standard_normal((n, k)).astype(np.float32)
        weights = DeviceWeights.from_quantized(formats.quantize(w32, args.format), args.format, k)
        w_fp16 = torch.from_numpy(w32).to("cuda", torch.float16)
        w_bf16 = torch.from_numpy(w32).to("cuda", torch.bfloat16)
        weight_bytes = weights.codes.numel() + weights.scales.numel()
        for m in ROWS:
            x = torch.randn((m, k), device="cuda").to(dtype)
            ws = kernels.matmul_workspace(weights, act, x)
            budget = args.repeat_seconds
            ours = median_seconds(partial(kernels.matmul, x, weights, act, workspace=ws), budget)
            fp16 = median_seconds(partial(torch.matmul, x.to(torch.float16), w_fp16.T), budget)
            bf16 = median_seconds(partial(torch.matmul, x.to(torch.bfloat16), w_bf16.T), budget)
            moved = weight_bytes + (m * k + m * n) * x.element_size()
            print(f"| {m} | {k}x{n} | {ours * 1e6:.1f} | {fp16 * 1e6:.1f} | {bf16 * 1e6:.1f} "
                  f"| {fp16 / ours:.2f}x | {bf16 / ours:.2f}x | {2 * m * n * k / ours / 1e12:.1f} "
                  f"| {moved / ours / bandwidth:.0%} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
