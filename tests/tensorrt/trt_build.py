"""Building the TensorRT test programs with g++ against TensorRT's and CUDA's headers
(NvInferRuntimeBase.h includes cuda_runtime_api.h), linked with nothing but libdl."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from amx_export.plugins.headers import tensorrt_include_dir

HERE = Path(__file__).parent
CUDA_HEADER = "cuda_runtime_api.h"


@dataclass(frozen=True)
class Compiler:
    gxx: str
    includes: tuple[Path, ...]


def _cuda_include_dir() -> Path | None:
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for root in filter(None, roots):
        if (Path(root) / "include" / CUDA_HEADER).exists():
            return Path(root) / "include"
    return None


def find_compiler() -> Compiler:
    """g++ and the header folders, or a pytest skip that says which is missing."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed: cannot build the TensorRT plugin harness")
    trt_include = tensorrt_include_dir(fetch=False)
    if trt_include is None:
        pytest.skip("TensorRT headers unavailable (python -m amx_export build fetches them)")
    cuda_include = _cuda_include_dir()
    if cuda_include is None:
        pytest.skip(f"CUDA headers unavailable ({CUDA_HEADER}; set CUDA_HOME)")
    return Compiler(gxx, (trt_include, cuda_include))


def compile_source(compiler: Compiler, source: Path, output: Path, *extra: str) -> None:
    # -isystem: warnings inside TensorRT's headers are not ours to fix; ours are errors
    command = [compiler.gxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror"]
    command += [arg for include in compiler.includes for arg in ("-isystem", str(include))]
    command += [str(source), "-o", str(output), *extra, "-ldl"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"compiling {source.name} failed:\n{' '.join(command)}\n{result.stderr}")
