"""Third-party headers the native build needs, found or fetched once and cached.

onnxruntime's C/C++ headers: ``ONNXRUNTIME_ROOT`` (an official release folder, headers in
``include/``) when set; otherwise the npm package ``com.github.asus4.onnxruntime`` (its iOS
framework carries the same public headers, C API version 29), fetched with ``npm pack`` and
only its header folder kept, in ``~/.cache/amx-export`` (``AMX_EXPORT_CACHE`` overrides).
Nothing is ever copied into the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..errors import UserError

ORT_NPM_PACKAGE = "com.github.asus4.onnxruntime@0.4.9"
ORT_HEADERS_IN_TARBALL = (
    "package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers/"
)
ORT_HEADER = "onnxruntime_c_api.h"


def cache_dir() -> Path:
    root = os.environ.get("AMX_EXPORT_CACHE") or Path.home() / ".cache" / "amx-export"
    return Path(root)


def onnxruntime_include_dir(fetch: bool = True) -> Path | None:
    """The folder holding onnxruntime_c_api.h, or None when absent and fetch is False."""
    root = os.environ.get("ONNXRUNTIME_ROOT")
    if root:
        for candidate in (Path(root) / "include", Path(root)):
            if (candidate / ORT_HEADER).exists():
                return candidate
        raise UserError(f"ONNXRUNTIME_ROOT={root}: no include/{ORT_HEADER} there")
    cached = cache_dir() / ("onnxruntime-headers-" + ORT_NPM_PACKAGE.rpartition("@")[2])
    if (cached / ORT_HEADER).exists():
        return cached
    if not fetch:
        return None
    _fetch_npm_headers(cached)
    return cached


def _fetch_npm_headers(destination: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(
            "onnxruntime headers: set ONNXRUNTIME_ROOT to an onnxruntime release folder, or "
            f"install npm so that {ORT_NPM_PACKAGE} can be fetched"
        )
    print(f"fetching onnxruntime headers: npm pack {ORT_NPM_PACKAGE} (about 150 MB, once)")
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
