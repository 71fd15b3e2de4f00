"""amx_cpu_set_parallel (amx_cpu.h): the kernels' loops run on the caller's runner, in any
task order, on any threads, a task more than once, and give the bits of the calling thread
alone; small work never reaches the runner."""

import ctypes
import random
import threading

import numpy as np
import pytest
from kernel_checks import selected_isa

from amx_export import formats

TASK_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t)
RUNNER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, TASK_FN, ctypes.c_size_t, ctypes.c_void_p)


class ShuffledRunner:
    """Runs every task twice, in a shuffled order, on three Python threads (ctypes releases
    the GIL around each call into the library); counts the loops it ran."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.loops: list[int] = []
        self.callback = RUNNER(self._run)

    def _run(self, _context, fn, tasks, data):
        self.loops.append(tasks)
        order = [t for t in range(tasks) for _ in range(2)]
        self.rng.shuffle(order)
        parts = [order[i::3] for i in range(3)]
        workers = [threading.Thread(target=lambda p=p: [fn(data, t) for t in p]) for p in parts]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()


@pytest.fixture
def installed(kernels):
    kernels.lib.amx_cpu_set_parallel.argtypes = [RUNNER, ctypes.c_void_p]
    kernels.lib.amx_cpu_set_parallel.restype = None

    def install(runner):
        kernels.lib.amx_cpu_set_parallel(runner.callback, None)

    yield install
    kernels.lib.amx_cpu_set_parallel(RUNNER(), None)  # NULL: the calling thread again


# (weight format, activation format): packed VNNI / integer / panel paths, tensor scales
CASES = [("amxfp4", "amxfp4"), ("mxfp4", None), ("nvfp4", "nvfp4")]


@pytest.mark.parametrize("isa", ["avx512-vnni", "avx2"])
@pytest.mark.parametrize(("wf", "act"), CASES)
@pytest.mark.parametrize("m", [1, 5, 70])
def test_any_task_order_gives_the_same_bits(kernels, installed, isa, wf, act, m):
    rng = np.random.default_rng(m)
    k, n = 1100, 1000  # K not a multiple of 32, N not one of 16
    q = formats.quantize(rng.standard_normal((n, k)).astype(np.float32), wf)
    x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    with selected_isa(kernels, isa):
        alone = kernels.matmul_packed(x, q, wf, act, bias)
        quantized = kernels.quantize(x, act or "mxfp4")
        fake = kernels.fake_quant(x, act or "mxfp4")
        runner = ShuffledRunner(seed=m)
        installed(runner)
        np.testing.assert_array_equal(kernels.matmul_packed(x, q, wf, act, bias), alone)
        again = kernels.quantize(x, act or "mxfp4")
        np.testing.assert_array_equal(again.codes, quantized.codes)
        np.testing.assert_array_equal(again.scales, quantized.scales)
        np.testing.assert_array_equal(kernels.fake_quant(x, act or "mxfp4"), fake)
    assert runner.loops and max(runner.loops) > 1  # the work did go through the runner


def test_small_work_stays_on_the_calling_thread(kernels, installed):
    rng = np.random.default_rng(0)
    q = formats.quantize(rng.standard_normal((64, 64)).astype(np.float32), "amxfp4")
    x = rng.standard_normal((1, 64)).astype(np.float32)
    runner = ShuffledRunner(seed=0)
    installed(runner)
    kernels.matmul_packed(x, q, "amxfp4", "amxfp4")
    kernels.fake_quant(rng.standard_normal((4, 1000)).astype(np.float32), "amxfp4")
    assert runner.loops == []
