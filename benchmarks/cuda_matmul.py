"""amx_cuda_matmul (plugins/cuda/) against cuBLAS and against the memory-bandwidth limit.

    python benchmarks/cuda_matmul.py [--format amxfp4] [--dtype float16 bfloat16]
        [--mode w4a4 w4a16] [--repeat-seconds 0.3] [--shapes 4096x4096 8192x8192]
        [--gemv-variants [baseline fused stream stream-fused]]

One process; for each K x N, M and mode, the same random X for every kernel. Each kernel is
timed as 48 calls captured in a CUDA graph and replayed between CUDA events (median of the
replays). The calls rotate over enough copies of the weights to spill the L2 cache (4x its
size), so that decode (small M) is timed reading weights from device memory, as in a model.
Baselines:
- cuBLAS: torch.matmul(X, Wᵀ) with full-precision weights in X's dtype;
- bandwidth: the bytes a matmul must move (packed weights + X + Y) divided by our time, as a
  fraction of a measured device-to-device copy (read + write of 1 GiB). At M = 1 this is
  the figure that matters: decode reads every weight once.
Before timing, each configuration is checked: ‖ours − ref‖ / ‖ref‖ against
fake_quant(X) @ dequant(W)ᵀ in float32 (TF32 off), printed as "rel err".
--gemv-variants times each GEMV variant (amx_cuda_set_gemv_variant; all give the same bits)
on every M <= 256, one row each, in the same process against the same cuBLAS time; M above
256 runs the GEMM once. Ratios > 1 mean ours is faster. Without a usable GPU it prints why
and exits 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial

import numpy as np

from amx_export import formats
from amx_export.plugins.cuda import GEMV_VARIANTS, CudaKernels, DeviceWeights, unavailable_reason

ROWS = (1, 16, 128, 512, 2048)
SHAPES = ((4096, 4096), (4096, 11008))
CALLS = 48  # calls per captured graph
GEMV_MAX_ROWS = 256  # plugins/cuda/device.cuh: kGemvMaxRows


def shape(text: str) -> tuple[int, int]:
    k, n = text.lower().split("x")
    return int(k), int(n)


def median_seconds(fn, budget: float, calls: int = CALLS) -> float:
    """Median time of one call fn(i): `calls` calls (i = 0..calls-1) captured in a CUDA graph
    (so Python and launch overhead stay out of the figure), replayed between CUDA events until
    `budget` seconds have been spent (at least 5 times)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the capture, as torch requires
        fn(0)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(i)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()  # first replay uploads the graph
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
    seconds = median_seconds(lambda i: b.copy_(a), budget, calls=4)
    return 2 * size / seconds


def copies_to_spill_cache(nbytes: int) -> int:
    """How many copies of an nbytes operand make the rotation 4x the L2 cache."""
    import torch

    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return min(CALLS, max(1, -(-4 * l2 // nbytes)))


def rotating(fn, operands):
    """fn(i) for median_seconds: call i takes operands[i % len(operands)]."""
    return lambda i: fn(operands[i % len(operands)])


def amx_matmul(kernels, x, weights, act, workspace):
    return kernels.matmul(x, weights, act, workspace=workspace)


def relative_error(got, ref) -> float:
    import torch

    return float(torch.linalg.vector_norm(got.double() - ref.double())
                 / torch.linalg.vector_norm(ref.double()))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", default="amxfp4", choices=formats.names())
    parser.add_argument("--dtype", nargs="+", default=["float16", "bfloat16"],
                        choices=["float16", "bfloat16"], help="X and Y types")  # fmt: skip
    parser.add_argument("--mode", nargs="+", default=["w4a4", "w4a16"],
                        choices=["w4a4", "w4a16"], help="W4A4: X quantized too")  # fmt: skip
    parser.add_argument("--rows", nargs="+", type=int, default=list(ROWS), help="values of M")
    parser.add_argument("--repeat-seconds", type=float, default=0.3)
    parser.add_argument("--shapes", nargs="+", type=shape, default=list(SHAPES),
                        help="K x N of the weights, e.g. 4096x11008")  # fmt: skip
    parser.add_argument("--gemv-variants", nargs="*", choices=GEMV_VARIANTS, default=None,
                        help="time these GEMV variants (none named: all) at M <= 256")  # fmt: skip
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"cuda_matmul: cannot run: {reason}", file=sys.stderr)
        return 2

    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # the float32 reference
    kernels = CudaKernels()
    variants = args.gemv_variants
    if variants is not None and not variants:
        variants = list(GEMV_VARIANTS)
    budget = args.repeat_seconds
    bandwidth = copy_bandwidth(budget)
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, {props.multi_processor_count} SMs, "
          f"L2 {props.L2_cache_size >> 20} MiB; copy {bandwidth / 1e12:.2f} TB/s")  # fmt: skip
    print(f"amx: {args.format}; cuBLAS: torch.matmul with full-precision weights in X's dtype\n")
    gemv_column = "" if variants is None else " GEMV |"
    print(f"| M | K x N | X | mode |{gemv_column} amx (us) | cuBLAS (us) | vs cuBLAS "
          "| amx TFLOP/s | bandwidth | rel err |")  # fmt: skip
    print("|---:|---|---|---|" + ("---|" if variants else "") + "---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for k, n in args.shapes:
        w32 = rng.standard_normal((n, k)).astype(np.float32)
        q = formats.quantize(w32, args.format)
        w_ref = torch.from_numpy(formats.dequantize(q, args.format, k)).cuda()
        one = DeviceWeights.from_quantized(q, args.format, k)
        packed_bytes = one.codes.numel() + one.scales.numel()
        ours = [one] + [
            one._replace(codes=one.codes.clone(), scales=one.scales.clone())
            for _ in range(copies_to_spill_cache(packed_bytes) - 1)
        ]
        for dtype_name in args.dtype:
            dtype = getattr(torch, dtype_name)
            w_full = torch.from_numpy(w32).to("cuda", dtype)
            full = [w_full] + [
                w_full.clone() for _ in range(copies_to_spill_cache(w_full.numel() * 2) - 1)
            ]
            for m in args.rows:
                x = torch.randn((m, k), device="cuda").to(dtype)
                x[:, ::29] *= 40  # outlier channels, as in the tests
                cublas = median_seconds(rotating(lambda w, x=x: torch.matmul(x, w.T), full), budget)
                for mode in args.mode:
                    act = args.format if mode == "w4a4" else None
                    ws = kernels.matmul_workspace(one, act, x)
                    x_in = kernels.fake_quant(x, args.format) if act else x
                    ref = x_in.float() @ w_ref.T
                    runs = [None] if variants is None or m > GEMV_MAX_ROWS else variants
                    for variant in runs:
                        if variant is not None:
                            kernels.set_gemv_variant(variant)
                        err = relative_error(kernels.matmul(x, one, act, workspace=ws), ref)
                        call = partial(amx_matmul, kernels, x, act=act, workspace=ws)
                        t = median_seconds(rotating(call, ours), budget)
                        moved = packed_bytes + (m * k + m * n) * x.element_size()
                        column = "" if variants is None else f" {variant or 'gemm'} |"
                        print(f"| {m} | {k}x{n} | {dtype_name} | {mode.upper()} |{column} "
                              f"{t * 1e6:.1f} | {cublas * 1e6:.1f} | {cublas / t:.2f}x "
                              f"| {2 * m * n * k / t / 1e12:.1f} | {moved / t / bandwidth:.0%} "
                              f"| {err:.1e} |", flush=True)  # fmt: skip
                    if variants is not None:
                        kernels.set_gemv_variant("baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
