"""``python -m amx_export build``: build the native libraries (CMake project in plugins/)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "build the native libraries (CPU kernels, onnxruntime custom ops) with CMake"
EPILOG = """\
For a source checkout (an installed wheel carries the libraries already; pip builds them,
see README.md). Builds plugins/ into build/plugins, incrementally, and installs
libamx_kernels.so, libamx_ort.so (and libamx_trt.so where nvcc is found) into
amx_export/plugins/lib/, where amx_export.plugins.library_path() and the CLI find them.

onnxruntime headers come from ONNXRUNTIME_ROOT (an onnxruntime release folder) when set;
otherwise they are fetched once with npm (com.github.asus4.onnxruntime, about 150 MB) and
cached in ~/.cache/amx-export (AMX_EXPORT_CACHE moves it). --no-fetch builds the kernels only.
libamx_ort.so requests onnxruntime C API 17 (1.17+), whose intra-op thread pool its CPU
kernels run on; it still loads in onnxruntime 1.16 (C API 16), where they run on one thread.
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "build",
        help=HELP,
        description=HELP + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--build-dir", type=Path, help="CMake build folder (build/plugins)")
    parser.add_argument("-j", "--jobs", type=int, help="parallel compile jobs (all cores)")
    parser.add_argument("--no-fetch", action="store_true", help="do not fetch onnxruntime headers")
    parser.add_argument(
        "--no-cuda", action="store_true", help="CPU kernels only, even where nvcc is found"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..plugins import build

    start = time.perf_counter()
    installed = build(args.build_dir, args.jobs, fetch=not args.no_fetch, cuda=not args.no_cuda)
    for path in installed:
        print(f"built {path}")
    print(f"native build done in {time.perf_counter() - start:.0f} s")
    return 0
