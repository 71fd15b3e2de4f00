"""Loading, unloading and reloading libamx_ort.so, libamx_trt.so and libamx_kernels.so in
every order, in one process, from one thread or several: the process must live and every
result stay the same (lifecycle_child.py does it in a child process, so a crash fails one
test instead of killing pytest).

The bug this guards against: with libamx_trt.so loaded first (polygraphy `--plugins` beside
onnxruntime), onnxruntime's dlclose of libamx_ort.so also unmapped libgomp while its worker
threads lived on: SIGSEGV on the second session (plugins/CMakeLists.txt, AMX_NODELETE). The
kernels have used no OpenMP since (they run on onnxruntime's pool: test_ort_threads.py); what
else must outlive an unload still must, and intra_op 2 runs our tasks on onnxruntime's threads.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import onnx_ir as ir
import pytest
import tiny_models

from amx_export.graph_passes.pipeline import Options, rewrite
from amx_export.plugins import library_path

CHILD = Path(__file__).with_name("lifecycle_child.py")
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    model = ir.from_proto(tiny_models.mlp())
    rewrite(model, Options(format="amxfp4"))
    path = tmp_path_factory.mktemp("lifecycle") / "mlp.amx.onnx"
    ir.save(model, path)
    return path


@pytest.fixture(scope="module")
def libraries(ort_library, kernels) -> dict[str, str]:
    found = {"ort": str(ort_library), "kernels": str(library_path("kernels"))}
    trt = library_path("trt", required=False)
    if trt is not None:
        found["trt"] = str(trt)
    elif os.environ.get("AMX_REQUIRE_NATIVE") == "1" and shutil.which("nvcc"):
        pytest.fail("libamx_trt.so is not built, though nvcc is here (python -m amx_export build)")
    return found


@pytest.mark.parametrize(
    ("first", "threads", "intra_op"),
    [
        ("trt", 1, 1),
        ("trt", 1, 2),
        ("trt", 3, 1),
        ("trt", 3, 2),
        ("ort", 1, 2),
        ("ort", 3, 2),
        ("kernels", 1, 2),
        ("kernels", 3, 2),
    ],
)
def test_every_load_and_unload_order_in_one_process(libraries, model, first, threads, intra_op):
    if first not in libraries:
        pytest.skip("libamx_trt.so is not built (python -m amx_export build, with nvcc on PATH)")
    spec = {
        "libraries": libraries,
        "model": str(model),
        "first": first,
        "threads": threads,
        "intra_op": intra_op,
    }
    result = subprocess.run(
        [sys.executable, str(CHILD), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    rounds = math.factorial(len(libraries)) ** 2  # every load order x every unload order
    code = result.returncode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
    assert (code, result.stdout.strip()) == (0, f"ok {rounds}"), (
        f"the child {how}:\n{result.stderr[-4000:]}"
    )
