"""amx.MatMul against onnxruntime's MatMul (float32) and MatMulNBits under three loads.

    .venv/bin/python benchmarks/cpu_threads.py [--repeat-seconds 0.5] [--rows 1 16]
        [--isa avx2 --mlas-isa avx2]

One process, cpu_matmul.py's models (4096x4096 and 4096x11008; amx.MatMul is W4A4, the
baselines MatMul with float32 weights and MatMulNBits with block 32, accuracy_level 4):

- quiet: one session per operator, onnxruntime's default threads;
- busy: the same while a child process spins on one core (started here, stopped after);
- 4 sessions: four Python threads each run a session of their own at intra_op_num_threads=2,
  all at once (session.run releases the GIL); a figure is the median of all their calls.

amx.MatMul runs twice: with amx_export.ort.session_options() as it is ("amx") and with
onnxruntime's idle-thread spinning set the other way ("amx, spinning on|off"), to check the
default. The baselines keep onnxruntime's defaults. Every line: per-call medians in ms, the
ratios (> 1: amx.MatMul is faster), the CPU, the kernels' ISA and the 1-minute load average.
--isa caps our kernels' tier; --mlas-isa runs onnxruntime's as on a CPU without AVX-512
(benchmarks/isa_mask.py): the same A/B for an AVX2-only (or AVX-VNNI) CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import isa_mask  # noqa: E402
from cpu_matmul import SHAPES, call_seconds, models  # noqa: E402

from amx_export.plugins import library_path  # noqa: E402

# onnxruntime, imported by main() once --mlas-isa is applied (isa_mask.use must come first)
ort = None

SPINNING = "session.intra_op.allow_spinning"
PARALLEL_SESSIONS = 4


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    names = [
        line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("model name")
    ]
    return names[0] if names else "unknown CPU"


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def amx_spinning() -> str:
    """What session_options() sets for spinning ("1" where it leaves onnxruntime's default)."""
    from amx_export.ort import session_options

    try:
        return session_options(native=True).get_session_config_entry(SPINNING)
    except RuntimeError:  # not set
        return "1"


def options(kind: str, threads: int = 0) -> ort.SessionOptions | None:
    """Session options for an operator kind: "fp32"/"nbits" defaults, "amx" ours, "amx-other"
    ours with spinning the other way."""
    from amx_export.ort import session_options

    if kind == "amx":
        opts = session_options(native=True)
    else:
        opts = ort.SessionOptions()
    if kind == "amx-other":  # a config entry cannot be changed without a warning: anew
        opts.register_custom_ops_library(str(library_path("ort")))
        opts.add_session_config_entry(SPINNING, "0" if amx_spinning() == "1" else "1")
    if threads:
        opts.intra_op_num_threads = threads
    return opts


def concurrent_median(built: bytes, kind: str, x: np.ndarray, budget: float) -> float:
    """Median call time of PARALLEL_SESSIONS sessions run at once from as many threads."""
    runs = [ort.InferenceSession(built, options(kind, threads=2)) for _ in range(PARALLEL_SESSIONS)]
    for session in runs:
        session.run(None, {"x": x})
    start = threading.Barrier(PARALLEL_SESSIONS)
    times: list[float] = []

    def work(session):
        mine = []
        start.wait()
        end = time.perf_counter() + budget
        while time.perf_counter() < end or len(mine) < 5:
            t = time.perf_counter()
            session.run(None, {"x": x})
            mine.append(time.perf_counter() - t)
        times.extend(mine)  # list.extend is atomic under the GIL

    threads = [threading.Thread(target=work, args=(s,)) for s in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statistics.median(times)


KINDS = {"MatMul fp32": "fp32", "MatMulNBits": "nbits", "amx.MatMul": "amx"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat-seconds", type=float, default=0.5)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16], help="the M values")
    parser.add_argument("--format", default="amxfp4")
    parser.add_argument("--isa", help="cap amx.MatMul's kernel tier (AMX_CPU_ISA)")
    parser.add_argument(
        "--mlas-isa", choices=isa_mask.TIERS,
        help="run onnxruntime's kernels as on a CPU with this tier at most (isa_mask.py)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.isa:
        os.environ["AMX_CPU_ISA"] = args.isa
    isa_mask.apply(parser, args.mlas_isa)
    global ort
    import onnxruntime as ort

    from amx_export.plugins.native import Kernels

    cpu, isa = cpu_name(), Kernels().isa()
    other = "spinning " + ("off" if amx_spinning() == "1" else "on")
    mlas = f"MLAS at {args.mlas_isa} (isa_mask.py)" if args.mlas_isa else "MLAS at its best"
    print(f"# onnxruntime {ort.__version__}, {mlas}; amx: session_options() (spinning "
          f"{'on' if amx_spinning() == '1' else 'off'}); amx, {other}: the other way")  # fmt: skip
    print(f"\n| load | K x N | M | MatMul fp32 | MatMulNBits | amx | amx, {other} "
          "| vs fp32 | vs NBits | CPU | ISA | loadavg |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    rng = np.random.default_rng(0)
    for k, n in SHAPES:
        built = models(k, n, args.format, rng)
        built["amx-other"] = built["amx.MatMul"]
        kinds = {**KINDS, "amx-other": "amx-other"}
        quiet = {name: ort.InferenceSession(b, options(kinds[name])) for name, b in built.items()}
        xs = {m: rng.standard_normal((m, k)).astype(np.float32) for m in args.rows}
        for load in ("quiet", "busy", f"{PARALLEL_SESSIONS} sessions"):
            hog = None
            if load == "busy":
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(0.2)
            try:
                for m, x in xs.items():
                    if load.endswith("sessions"):
                        t = {name: concurrent_median(built[name], kinds[name], x,
                                                     args.repeat_seconds)
                             for name in built}  # fmt: skip
                    else:
                        t = {name: statistics.median(call_seconds(s, x, args.repeat_seconds))
                             for name, s in quiet.items()}  # fmt: skip
                    amx = t["amx.MatMul"]
                    cells = [load, f"{k}x{n}", str(m), *(f"{t[name] * 1e3:.3g}" for name in built),
                             f"{t['MatMul fp32'] / amx:.2f}x", f"{t['MatMulNBits'] / amx:.2f}x",
                             cpu, isa, load_average()]  # fmt: skip
                    print("| " + " | ".join(cells) + " |", flush=True)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
