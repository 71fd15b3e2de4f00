"""The child process of test_library_lifecycle.py, on its own so that a crash kills only it.

argv[1] is a JSON object: "libraries" {kind: path} (kinds "ort", "trt", "kernels"), "model"
(an ONNX file with amx nodes), "first" (a kind), "threads", "intra_op". Each round loads the
libraries in one order and unloads them in one order; the rounds cover all orders (6 x 6
with three kinds), those that load "first" first at the start, since whichever library the
process loads first can decide what stays mapped. With "threads" > 1, each round runs in that
many new Python threads at once, each in its own orders. Every result is compared with the
first of its kind. Prints "ok <rounds>" and exits 0, or exits 1 with the failures.

Loading and unloading a kind:
- ort: an onnxruntime session with the custom-op library (onnxruntime dlopens it), run;
  unloaded by dropping the session and its options (onnxruntime dlcloses the library then);
- trt: ctypes.CDLL, as polygraphy `--plugins` does, and getCreators; unloaded by dlclose;
- kernels: ctypes.CDLL and an amx_cpu_fake_quant; unloaded by dlclose.
"""

from __future__ import annotations

import _ctypes
import ctypes
import itertools
import json
import sys
import threading

import numpy as np
import onnxruntime as ort

SPEC = json.loads(sys.argv[1])
LIBRARIES: dict[str, str] = SPEC["libraries"]
X = np.random.default_rng(0).standard_normal((4, 8, 64)).astype(np.float32)
ROWS = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)  # 2^16 values

_expected: dict[str, np.ndarray] = {}
_lock = threading.Lock()


def check(kind: str, result: np.ndarray) -> None:
    with _lock:
        expected = _expected.setdefault(kind, result)
    assert np.array_equal(result, expected, equal_nan=True), f"{kind}: result changed"


class Loaded:
    """What one thread holds of each kind, and how it loads and drops it."""

    def __init__(self) -> None:
        self.held: dict[str, object] = {}

    def load(self, kind: str) -> None:
        path = LIBRARIES[kind]
        if kind == "ort":
            options = ort.SessionOptions()
            options.register_custom_ops_library(path)
            options.intra_op_num_threads = SPEC["intra_op"]
            session = ort.InferenceSession(SPEC["model"], options)
            check("ort", session.run(None, {"x": X})[0])
            self.held[kind] = (options, session)
        elif kind == "trt":
            lib = ctypes.CDLL(path)
            lib.getCreators.restype = ctypes.c_void_p
            count = ctypes.c_int32()
            assert lib.getCreators(ctypes.byref(count)) and count.value == 2, "getCreators"
            self.held[kind] = lib
        else:
            lib = ctypes.CDLL(path)
            y = np.empty_like(ROWS)
            pointer = ctypes.c_void_p
            status = lib.amx_cpu_fake_quant(
                b"amxfp4", pointer(ROWS.ctypes.data), ctypes.c_int64(ROWS.shape[0]),
                ctypes.c_int64(ROWS.shape[1]), pointer(y.ctypes.data),
            )  # fmt: skip
            assert status == 0, f"amx_cpu_fake_quant: {status}"
            check("kernels", y)
            self.held[kind] = lib

    def unload(self, kind: str) -> None:
        held = self.held.pop(kind)
        if kind != "ort":
            _ctypes.dlclose(held._handle)
        del held  # the last reference to an ort session and its options: onnxruntime unloads


def rounds() -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    orders = list(itertools.permutations(sorted(LIBRARIES)))
    pairs = list(itertools.product(orders, orders))
    return sorted(pairs, key=lambda pair: pair[0][0] != SPEC["first"])  # stable


def run_round(pair, failures: list[str]) -> None:
    loaded = Loaded()
    try:
        for kind in pair[0]:
            loaded.load(kind)
        for kind in pair[1]:
            loaded.unload(kind)
    except Exception as error:  # noqa: BLE001 - reported by the parent test
        failures.append(f"load {pair[0]}, unload {pair[1]}: {error!r}")


def main() -> int:
    failures: list[str] = []
    all_rounds = rounds()
    for index, pair in enumerate(all_rounds):
        if SPEC["threads"] == 1:
            run_round(pair, failures)
            continue
        # thread t takes another round's orders, so the threads load and unload out of step
        pairs = [all_rounds[(index + 7 * t) % len(all_rounds)] for t in range(SPEC["threads"])]
        threads = [threading.Thread(target=run_round, args=(p, failures)) for p in pairs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if failures:
        print("\n".join(failures[:10]), file=sys.stderr)
        return 1
    print(f"ok {len(all_rounds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
