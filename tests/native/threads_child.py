"""The child process of test_ort_threads.py: a fresh process, so that its threads are only
onnxruntime's and whatever our library starts (none: it runs on onnxruntime's pool).

argv[1] is a JSON object: "library" (libamx_ort.so), "model", "feeds" (an .npz whose keys are
"<set>/<input>"), "output" (an .npz to write) and "repeat" (runs of every feed set per
session). For each intra_op_num_threads in THREADS and each execution mode, one session runs
every feed set; its outputs go to "output" as "<threads>-<mode>/<set>/<output>". Prints one
JSON object: "isa" (amx_cpu_isa of the loaded library), "gomp" (whether a libgomp is mapped
into the process), "leftover" (threads alive after every session is gone that were not before
the first) and per session "threads", "mode", "created" (the threads its creation started),
"during" (those that appeared while it ran) and "pool_cpu_ms" (the CPU time its own threads
spent while it ran; onnxruntime's idle workers neither spin nor wake: spinning is off).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

THREADS = (1, 2, 3)
MODES = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}


def threads() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def cpu_ms(tids) -> float:
    """CPU time of these threads so far (schedstat: nanoseconds on a CPU), ms."""
    total = 0
    for tid in tids:
        try:
            total += int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0])
        except FileNotFoundError:  # the thread has ended
            pass
    return total / 1e6


def main() -> int:
    spec = json.loads(sys.argv[1])
    data = np.load(spec["feeds"])
    feeds: dict[str, dict[str, np.ndarray]] = {}
    for key in data.files:
        name, inp = key.split("/")
        feeds.setdefault(name, {})[inp] = data[key]
    outputs, report = {}, []
    start = threads()
    for count in THREADS:
        for mode, execution in MODES.items():
            options = ort.SessionOptions()
            options.register_custom_ops_library(spec["library"])
            options.intra_op_num_threads = count
            options.execution_mode = execution
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            before = threads()
            session = ort.InferenceSession(spec["model"], options)
            created = threads() - before
            cpu_before = cpu_ms(created)
            names = [o.name for o in session.get_outputs()]
            for name, feed in feeds.items():
                for _ in range(spec["repeat"]):
                    results = session.run(None, feed)
                for out, value in zip(names, results, strict=True):
                    outputs[f"{count}-{mode}/{name}/{out}"] = value
            during = threads() - before - created
            report.append({
                "threads": count, "mode": mode, "created": len(created),
                "during": len(during), "pool_cpu_ms": cpu_ms(created) - cpu_before,
            })  # fmt: skip
            del session, options
    np.savez(spec["output"], **outputs)
    lib = ctypes.CDLL(spec["library"])  # the copy onnxruntime loaded: same path, same handle
    lib.amx_cpu_isa.restype = ctypes.c_char_p
    maps = Path("/proc/self/maps").read_text()
    print(json.dumps({
        "isa": lib.amx_cpu_isa().decode(), "gomp": "libgomp" in maps,
        "leftover": len(threads() - start), "sessions": report,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
