"""Instructions per call of amx.MatMul and onnxruntime's MatMul / MatMulNBits, counted by
valgrind: the AVX2-only A/B.

    .venv/bin/python benchmarks/cpu_instructions.py [--format amxfp4] [--rows 1 16 64]
        [--calls 2] [--shapes 4096x4096 4096x11008] [--cycles znver3 haswell skylake]

valgrind hides AVX-512 and AVX-VNNI from the program it runs, so under it both our kernels
(tier "avx2") and onnxruntime's MLAS dispatch to their AVX2 code: the comparison an AVX2-only
CPU would see, on any machine. Counts are exact and repeatable whatever else the machine runs
(seconds on a shared machine are not). Each (shape, operator) runs in a child process under
`valgrind --tool=callgrind`, one thread (intra_op_num_threads = 1, OMP_NUM_THREADS = 1),
counting only inside one C function (a trampoline compiled here, with callgrind's client
requests) that calls session.run `--calls` times after two warm-up runs: loading, packing and
the first runs' allocations are not counted; Python's own cost of session.run (the same for
every operator, a few thousand instructions) is.

Instructions are not cycles, but these kernels are bound by vector ALU throughput, and the
instructions that dominate them (VPMADDUBSW, VPSHUFB, VPADD*, VFMADD*) issue at similar rates,
so the ratio is a fair proxy for the time ratio. Prints a markdown table: instructions per
call and MatMulNBits / amx.MatMul (> 1: ours needs fewer).

`--cycles znver3 haswell skylake` adds a better proxy for compute-bound kernels: callgrind
also records each instruction's count (`--dump-instr=yes`), and benchmarks/cycle_model.py
costs the exact code each side executed with llvm-mca's static port model of each CPU
(VPSHUFB on port 5 only on Haswell/Skylake, broadcasts from memory on the load ports, ...):
estimated cycles per call, one table per CPU model. Not a measurement: cache misses, branch
mispredictions and memory bandwidth are not modelled (at M = 1 the weights stream from L2 or
DRAM, which this ignores), nor are other threads; blocks outside the hottest 99.5% of the
instructions get the average cycles per instruction of those inside it, and memcpy / memset's
rep-prefixed string instructions a fixed 1/32 cycle per byte.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from cycle_model import Estimate, check_tools, estimate, self_counts

# counts only inside f (valgrind's client requests; natively they do nothing), one dump each
TRAMPOLINE = """#include <valgrind/callgrind.h>
void amx_bench_measured(void (*f)(void)) {
  CALLGRIND_TOGGLE_COLLECT;
  f();
  CALLGRIND_TOGGLE_COLLECT;
  CALLGRIND_DUMP_STATS;
}
"""
OPERATORS = ("MatMul fp32", "MatMulNBits", "amx.MatMul")


def child(model: str, rows: list[int], calls: int, trampoline: str, library: str) -> None:
    """Runs under valgrind: for each m, `calls` counted runs of the model on an [m, k] input."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if library:
        options.register_custom_ops_library(library)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options)
    k = session.get_inputs()[0].shape[1]
    measured = ctypes.CDLL(trampoline).amx_bench_measured
    for m in rows:
        x = {"x": np.random.default_rng(m).standard_normal((m, k)).astype(np.float32)}
        for _ in range(2):
            session.run(None, x)

        def runs(x=x):
            for _ in range(calls):
                session.run(None, x)

        callback = ctypes.CFUNCTYPE(None)(runs)
        measured(callback)


def count(
    model: Path,
    rows: list[int],
    calls: int,
    trampoline: Path,
    library: str,
    out: Path,
    cpus: list[str],
) -> list[tuple[float, dict[str, Estimate]]]:
    """Instructions per call of one model at each M (one child process under callgrind), and
    with `cpus` the estimated cycles of all `calls` on each CPU model."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    command = [
        "valgrind", "--tool=callgrind", "--collect-atstart=no", f"--callgrind-out-file={out}",
        *(["--dump-instr=yes"] if cpus else []),
        sys.executable, __file__, "--child", str(model), ",".join(map(str, rows)), str(calls),
        str(trampoline), library,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"valgrind failed on {model.name}:\n{done.stderr[-3000:]}")
    counts = []
    for i in range(len(rows)):  # one dump per M, numbered from 1
        dump = Path(f"{out}.{i + 1}").read_text()
        totals = [line for line in dump.splitlines() if line.startswith("totals:")]
        counts.append((int(totals[0].split()[1]) / calls,
                       estimate(self_counts(dump), cpus) if cpus else {}))  # fmt: skip
    return counts


def row(shape: str, m: int, per: dict[str, float]) -> str:
    """A table row: each operator's number per call, then NBits / amx and fp32 / amx."""
    cells = [shape, str(m)]
    cells += [f"{per[o]:,.0f}" if o in per else "-" for o in OPERATORS]
    amx = per.get("amx.MatMul")
    for base in ("MatMulNBits", "MatMul fp32"):
        cells.append(f"{per[base] / amx:.2f}x" if amx and base in per else "-")
    return "| " + " | ".join(cells) + " |"


HEADER = """| K x N | M | MatMul fp32 | MatMulNBits | amx.MatMul (avx2) | NBits / amx | fp32 / amx |
|---|---:|---:|---:|---:|---:|---:|"""


def print_cycles(cpus: list[str], found: list[tuple[str, int, dict]], calls: int) -> None:
    """One table per CPU model of estimated cycles per call (found: shape, M, counts)."""
    for cpu in cpus:
        print(f"\n# estimated cycles per call, llvm-mca -mcpu={cpu} (static port model)\n")
        print(HEADER)
        modelled = []
        for shape, m, got in found:
            print(row(shape, m, {name: est[cpu].cycles / calls for name, (_, est) in got.items()}))
            modelled += [est[cpu].modelled for _, est in got.values()]
        print(f"\nllvm-mca costed blocks holding {min(modelled):.2%} or more of each count's "
              "instructions; the rest at their average cycles per instruction.")  # fmt: skip


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, rows, calls, trampoline, library = sys.argv[2:7]
        child(model, [int(m) for m in rows.split(",")], int(calls), trampoline, library)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", default="amxfp4")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--calls", type=int, default=2, help="counted runs per child")
    parser.add_argument("--shapes", nargs="+", default=["4096x4096", "4096x11008"])
    parser.add_argument("--operators", nargs="+", default=list(OPERATORS), choices=OPERATORS)
    parser.add_argument("--cycles", nargs="+", default=[], metavar="CPU",
                        help="also estimate cycles per call with llvm-mca -mcpu=CPU")  # fmt: skip
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from cpu_matmul import models

    from amx_export.plugins import library_path

    library = str(library_path("ort"))
    if args.cycles:
        check_tools()
    print(f"# instructions per call under valgrind (AVX2 code paths), one thread, {args.format}")
    print("\n" + HEADER)
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trampoline = folder / "trampoline.so"
        (folder / "trampoline.c").write_text(TRAMPOLINE)
        subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", trampoline,
                        folder / "trampoline.c"], check=True)  # fmt: skip
        for shape in args.shapes:
            k, n = (int(v) for v in shape.split("x"))
            paths = {}
            for i, (name, model) in enumerate(
                models(k, n, args.format, np.random.default_rng(0)).items()
            ):
                paths[name] = folder / f"model{i}.onnx"
                paths[name].write_bytes(model)
            got = {
                name: count(paths[name], args.rows, args.calls, trampoline,
                            library if name == "amx.MatMul" else "", folder / f"out{i}",
                            args.cycles)
                for i, name in enumerate(args.operators)
            }  # fmt: skip
            for j, m in enumerate(args.rows):
                per_m = {name: counts[j] for name, counts in got.items()}
                print(row(f"{k}x{n}", m, {name: c[0] for name, c in per_m.items()}), flush=True)
                found.append((f"{k}x{n}", m, per_m))
    print_cycles(args.cycles, found, args.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
