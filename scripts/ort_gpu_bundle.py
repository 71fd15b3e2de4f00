#!/usr/bin/env python3
"""onnxruntime-gpu's CUDA execution provider for the GPU machine, small enough to carry.

The GPU machine has CPU onnxruntime only and no network; a device call carries at most
64 MiB, and the onnxruntime-gpu wheel is 255 MB (its CUDA provider alone 284 MB, 218 MB of it
CUDA kernels for sm_75 to sm_120). The GPU is one architecture, so:

    here:   python3 scripts/ort_gpu_bundle.py pack [--sm 90] [--version 1.31.1]
            -> build/ort-gpu/onnxruntime-gpu-<version>-sm<sm>.tar.xz (about 60 MB), or
               numbered parts of --part-mib each when it is larger
    device: python3 scripts/ort_gpu_bundle.py unpack  -> build/ort-gpu/site/onnxruntime
            (scripts/gpu_check.sh does this and puts it first on PYTHONPATH)

`pack` downloads the wheel with pip (cached under build/ort-gpu/wheels), keeps the Python
package, the pybind module and the CUDA provider (not libonnxruntime.so, the C API library
the module does not load, nor the TensorRT provider), and zeroes, in place, the payload of
every kernel image in the provider's .nv_fatbin section that is not for --sm: the ELF and
every fatbin header keep their bytes and offsets, the CUDA runtime only reads the images of
the device's architecture, and runs of zeros compress to nothing. Stdlib only (the GPU
machine's python3 has no extras).
"""

from __future__ import annotations

import argparse
import io
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "ort-gpu"
FATBIN_MAGIC = 0xBA55ED50
# files of the wheel the CUDA EP does not need on the GPU machine
DROPPED = ("libonnxruntime.so", "libonnxruntime_providers_tensorrt.so")


def fatbin_section(elf: bytes | bytearray) -> tuple[int, int]:
    """(offset, size) of the .nv_fatbin section of a 64-bit little-endian ELF."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    entsize, count, names = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", elf, shoff + i * entsize) for i in range(count)]
    strings = headers[names][4]
    for name, _, _, _, offset, size in headers:
        end = elf.index(b"\0", strings + name)
        if bytes(elf[strings + name : end]) == b".nv_fatbin":
            return offset, size
    raise ValueError("no .nv_fatbin section")


def fatbin_images(elf: bytes | bytearray):
    """Each kernel image of the .nv_fatbin section: (kind, sm, payload offset, payload size);
    kind 1 is PTX, 2 an ELF cubin."""
    offset, size = fatbin_section(elf)
    at, end = offset, offset + size
    while at + 16 <= end:
        magic, _, header, body = struct.unpack_from("<IHHQ", elf, at)
        if magic != FATBIN_MAGIC:  # blobs are 8-byte aligned, with padding between
            at += 8
            continue
        entry, stop = at + header, at + header + body
        while entry < stop:
            kind, _, entry_header, padded = struct.unpack_from("<HHII", elf, entry)
            sm = struct.unpack_from("<I", elf, entry + 28)[0]
            yield kind, sm, entry + entry_header, padded
            entry += entry_header + padded
        at = stop


def keep_only_sm(elf: bytearray, sm: int) -> tuple[int, int]:
    """Zeroes the payload of every image not for `sm`; returns (images kept, bytes zeroed).
    Fails if no image is for `sm` (the result would run nothing)."""
    kept = zeroed = 0
    for _, image_sm, payload, size in list(fatbin_images(elf)):
        if image_sm == sm:
            kept += 1
        else:
            elf[payload : payload + size] = bytes(size)
            zeroed += size
    if not kept:
        raise SystemExit(f"error: the CUDA provider has no kernel image for sm_{sm}")
    return kept, zeroed


def download(version: str, python: str) -> Path:
    wheels = OUT / "wheels"
    found = sorted(wheels.glob(f"onnxruntime_gpu-{version}-cp{python.replace('.', '')}-*.whl"))
    if found:
        return found[-1]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"onnxruntime-gpu=={version}", "--no-deps",
         "--only-binary=:all:", "--python-version", python,
         "--platform", "manylinux_2_28_x86_64", "-d", str(wheels)],
        check=True,
    )  # fmt: skip
    return download(version, python)


def pack(args) -> None:
    wheel = download(args.version, args.python)
    kept = "all" if args.all_architectures else f"sm{args.sm}"
    name = f"onnxruntime-gpu-{args.version}-{kept}.tar.xz"
    buffer = io.BytesIO()
    tar = tarfile.open(fileobj=buffer, mode="w:xz", preset=6)
    with zipfile.ZipFile(wheel) as archive, tar:
        for item in archive.infolist():
            path = item.filename
            if item.is_dir() or not path.startswith("onnxruntime/"):
                continue
            if Path(path).name.startswith(DROPPED):
                continue
            data = archive.read(item)
            if path.endswith("libonnxruntime_providers_cuda.so") and not args.all_architectures:
                data = bytearray(data)
                kept, zeroed = keep_only_sm(data, args.sm)
                print(f"{path}: kept {kept} sm_{args.sm} images, zeroed {zeroed / 1e6:.0f} MB")
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o755 if path.endswith(".so") else 0o644
            tar.addfile(info, io.BytesIO(bytes(data)))
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob(f"{name}*"):
        old.unlink()
    blob, part = buffer.getvalue(), args.part_mib << 20
    if len(blob) <= part:
        (OUT / name).write_bytes(blob)
        print(f"wrote {OUT / name} ({len(blob) / 2**20:.1f} MiB)")
        return
    for index in range(0, len(blob), part):
        target = OUT / f"{name}.part{index // part}"
        target.write_bytes(blob[index : index + part])
        print(f"wrote {target} ({len(blob[index : index + part]) / 2**20:.1f} MiB)")


def unpack(args) -> None:
    source = Path(args.source)
    bundles = sorted(source.glob("onnxruntime-gpu-*.tar.xz"))
    parts = sorted(source.glob("onnxruntime-gpu-*.tar.xz.part*"), key=lambda p: int(p.suffix[5:]))
    if bundles:
        blob = bundles[-1].read_bytes()
    elif parts:
        blob = b"".join(p.read_bytes() for p in parts)
    else:
        raise SystemExit(f"error: no onnxruntime-gpu bundle in {source} (run `pack` here first)")
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:xz") as tar:
        tar.extractall(dest, filter="data")
    print(f"onnxruntime-gpu unpacked into {dest} (put it first on PYTHONPATH)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packer = commands.add_parser("pack", help="download, trim and compress (here)")
    packer.add_argument("--version", default="1.31.1", help="onnxruntime-gpu release")
    packer.add_argument("--python", default="3.12", help="the GPU machine's Python")
    packer.add_argument("--sm", type=int, default=90, help="the GPU's compute capability")
    packer.add_argument(
        "--all-architectures", action="store_true",
        help="keep every kernel image (about 190 MB: parts, one per warm device call)",
    )  # fmt: skip
    packer.add_argument("--part-mib", type=int, default=60, help="largest file to write")
    unpacker = commands.add_parser("unpack", help="on the GPU machine")
    unpacker.add_argument("--source", default=str(OUT))
    unpacker.add_argument("--dest", default=str(OUT / "site"))
    args = parser.parse_args(argv)
    (pack if args.command == "pack" else unpack)(args)


if __name__ == "__main__":
    main()
