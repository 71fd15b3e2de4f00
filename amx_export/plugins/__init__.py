"""The native libraries: where they are, and how to build them.

They live in ``amx_export/plugins/lib/``: a wheel (``pip install .``, CMakeLists.txt at the
top of the source tree) carries them there, and in a source checkout ``python -m amx_export
build`` builds the CMake project in ``plugins/`` and copies them there:

- ``kernels``: ``libamx_kernels.so``, the C ABI of the CPU (and CUDA) kernels;
- ``ort``: ``libamx_ort.so``, the onnxruntime custom-op library;
- ``trt``: ``libamx_trt.so``, the TensorRT plugin library (built when nvcc is found).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import UserError

LIBRARIES = {"kernels": "libamx_kernels.so", "ort": "libamx_ort.so", "trt": "libamx_trt.so"}
LIB_DIR = Path(__file__).parent / "lib"
CHECKOUT = Path(__file__).resolve().parents[2]  # the source tree, when this is one
SOURCE_DIR = CHECKOUT / "plugins"


def in_checkout() -> bool:
    """Whether this package runs from a source checkout (which ``build`` can build), not
    from an installed wheel."""
    return (SOURCE_DIR / "CMakeLists.txt").is_file() and (CHECKOUT / "pyproject.toml").is_file()


def build_hint() -> str:
    """How to get the libraries, for an error that finds one missing."""
    if in_checkout():
        return "build it with: python -m amx_export build  (scripts/setup.sh does)"
    return "this installed amx-export was built without it; reinstall from a source checkout"


def library_path(kind: str, required: bool = True) -> str | None:
    """The path (a str, as ``SessionOptions.register_custom_ops_library`` and
    ``ctypes.CDLL`` take it) of the built library of ``kind`` ("kernels", "ort" or "trt");
    ``AMX_EXPORT_LIB_DIR`` overrides the folder. Missing: a UserError that says how to get
    it, or None if not required."""
    if kind not in LIBRARIES:
        raise ValueError(f"unknown library kind {kind!r}; known: {', '.join(LIBRARIES)}")
    folder = Path(os.environ.get("AMX_EXPORT_LIB_DIR") or LIB_DIR)
    path = folder / LIBRARIES[kind]
    if path.exists():
        return str(path)
    if required:
        raise UserError(f"{path}: the {kind} library is not built; {build_hint()}")
    return None


def build(
    build_dir: Path | None = None, jobs: int | None = None, fetch: bool = True, cuda: bool = True
) -> list[Path]:
    """Configure, build and install the libraries into LIB_DIR; returns their paths.
    ``cuda``: compile the CUDA kernels (and libamx_trt.so) where nvcc is found."""
    from .headers import onnxruntime_include_dir, tensorrt_include_dir

    if shutil.which("cmake") is None:
        raise UserError("building the native libraries needs cmake (and a C++17 compiler)")
    if not in_checkout():
        raise UserError(
            f"this amx-export is installed, not a source checkout: its wheel carries the "
            f"native libraries already ({LIB_DIR}); to rebuild them, run `pip install .` "
            "or `python -m amx_export build` in a source checkout"
        )
    build_dir = Path(build_dir or SOURCE_DIR.parent / "build" / "plugins")
    ort_include = onnxruntime_include_dir(fetch=fetch)
    configure = ["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DAMX_CUDA={'ON' if cuda else 'OFF'}"]  # fmt: skip
    if ort_include is not None:
        configure.append(f"-DONNXRUNTIME_INCLUDE_DIR={ort_include}")
    trt_include = tensorrt_include_dir(fetch=fetch) if cuda and shutil.which("nvcc") else None
    if trt_include is not None:  # the plugins need CUDA's headers and kernels as well
        configure.append(f"-DTENSORRT_INCLUDE_DIR={trt_include}")
    _run(configure, "configure")
    _run(["cmake", "--build", str(build_dir), "-j", str(jobs or os.cpu_count() or 2)], "build")
    # the install rules (plugins/CMakeLists.txt, as for a wheel) name this configuration's
    # libraries: one it no longer builds (--no-cuda after a CUDA build) is not left behind
    with tempfile.TemporaryDirectory(dir=build_dir) as staging:
        _run(["cmake", "--install", str(build_dir), "--prefix", staging], "install")
        return _replace_libraries(Path(staging) / "amx_export" / "plugins" / "lib")


def _replace_libraries(built: Path) -> list[Path]:
    LIB_DIR.mkdir(exist_ok=True)
    installed = []
    for name in LIBRARIES.values():
        target = LIB_DIR / name
        if (built / name).exists():
            # copy beside, then rename: a process that has the old library loaded keeps its
            # inode (writing into the mapped file in place crashes it)
            staged = LIB_DIR / f".{name}.new"
            shutil.copy2(built / name, staged)
            os.replace(staged, target)
            installed.append(target)
        elif target.exists():
            target.unlink()
    return installed


def _run(command: list[str], step: str) -> None:
    """Run one cmake step quietly but for a progress line every ~10 s (make's "[ NN%]"
    lines; a CUDA build takes minutes); on failure the end of its output, then one error line."""
    tail: collections.deque[str] = collections.deque(maxlen=400)
    start = shown = time.monotonic()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        for line in process.stdout:
            tail.append(line)
            percent = _PERCENT.match(line)
            if percent and time.monotonic() - shown >= PROGRESS_EVERY_S:
                shown = time.monotonic()
                what = line[percent.end() :].strip().rpartition("/")[2]
                print(f"native {step}: {percent[1]}% after {shown - start:.0f} s ({what})",
                      file=sys.stderr, flush=True)  # fmt: skip
    if process.returncode != 0:
        sys.stderr.write("".join(tail)[-8000:])
        raise UserError(f"native {step} failed (cmake output above): {' '.join(command)}")


PROGRESS_EVERY_S = 10
_PERCENT = re.compile(r"\[\s*(\d+)%\]")
