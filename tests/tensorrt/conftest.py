"""libamx_trt.so without a TensorRT runtime: harness.cc plays TensorRT's part.

Once per session, g++ builds the harness and a fake libnvinfer.so.10 (fake_nvinfer.cc)
against TensorRT's headers and CUDA's (NvInferRuntimeBase.h includes cuda_runtime_api.h),
linked with nothing but libdl; the harness prints one JSON line per check and case.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from trt_build import HERE, Compiler, compile_source, find_compiler

from amx_export.plugins import library_path

TIMEOUT_S = 120


@dataclass(frozen=True)
class Binaries:
    harness: Path
    fake_nvinfer: Path


@dataclass(frozen=True)
class Run:
    results: dict[tuple[str, str], dict]  # (check, case) -> the JSON line
    stderr: str
    returncode: int

    def get(self, check: str, case: str = "") -> dict:
        key = (check, case)
        assert key in self.results, (
            f"no result for {key}; the harness exited with {self.returncode}:\n{self.stderr}"
        )
        return self.results[key]


@pytest.fixture(scope="session")
def compiler() -> Compiler:
    return find_compiler()


@pytest.fixture(scope="session")
def binaries(compiler, tmp_path_factory) -> Binaries:
    out = tmp_path_factory.mktemp("trt_harness")
    binaries = Binaries(out / "harness", out / "fake_nvinfer.so")
    compile_source(compiler, HERE / "harness.cc", binaries.harness)
    # the soname is what the library's dlopen("libnvinfer.so.10", RTLD_NOLOAD) matches
    fake_flags = ("-shared", "-fPIC", "-Wl,-soname,libnvinfer.so.10")
    compile_source(compiler, HERE / "fake_nvinfer.cc", binaries.fake_nvinfer, *fake_flags)
    return binaries


@pytest.fixture(scope="session")
def trt_library() -> Path:
    path = library_path("trt", required=False)
    if path is None:
        reason = "libamx_trt.so is not built (python -m amx_export build, with nvcc on PATH)"
        if os.environ.get("AMX_REQUIRE_NATIVE") == "1" and shutil.which("nvcc"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def run_harness(binaries: Binaries, library: Path, *args: str) -> Run:
    command = [str(binaries.harness), str(library), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    results = {}
    for line in result.stdout.splitlines():
        parsed = json.loads(line)
        key = (parsed["check"], parsed["case"])
        assert key not in results, f"{key} reported twice"
        results[key] = parsed
    return Run(results, result.stderr, result.returncode)


@pytest.fixture(scope="session")
def harness(binaries, trt_library) -> Run:
    """Every check but self_registration, in a process without libnvinfer."""
    return run_harness(binaries, trt_library)


@pytest.fixture(scope="session")
def registration_run(binaries, trt_library) -> Run:
    """self_registration: the fake libnvinfer is loaded before the library, in a process of
    its own (the library registers when it is loaded, so the order cannot be undone)."""
    return run_harness(
        binaries, trt_library, "--fake-nvinfer", str(binaries.fake_nvinfer), "self_registration"
    )
