"""Run onnxruntime as on a CPU with fewer vector features: its MLAS kernels at a chosen tier.

MLAS has no setting to cap its kernels: it reads CPUID and XGETBV once and takes its best
code for the CPU. So on an AVX-512 machine MatMulNBits runs its AVX-512 kernels, and an A/B
against our AVX2 tier (`--isa avx2`) measures two tiers, not two kernels. `use(tier)`, called
before onnxruntime is first imported, imports it instead from a copy of the package whose
libraries have every CPUID and XGETBV instruction replaced by a trap (int3 and marker bytes,
same lengths; the sites come from `objdump -d`). The handler (isa_mask.c, compiled here with
the system C compiler) runs the real instruction and hides AVX-512 (the CPUID bits and the
XCR0 state an OS enables for it), and for "avx2" also AVX-VNNI: what an AVX2-only CPU (Zen 3,
Haswell to Comet Lake) reports, or an AVX-VNNI one without AVX-512 (Alder Lake, Zen 4 is not
one). Everything else runs natively: timings are this CPU's cores running the other tier's
code, not an emulation. The copy is made once per tier and onnxruntime build, under
build/isa-mask/.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

TIERS = ("avx2", "avx-vnni")
CACHE = Path(__file__).resolve().parent.parent / "build" / "isa-mask"
HANDLER = Path(__file__).with_name("isa_mask.c")
# instruction bytes -> the trap put in their place (int3, then a marker the handler checks)
PATCHES = {"cpuid": (b"\x0f\xa2", b"\xcc\x01"), "xgetbv": (b"\x0f\x01\xd0", b"\xcc\x02\x02")}

_handler: ctypes.CDLL | None = None


class MaskError(RuntimeError):
    """The masked copy cannot be made (no objdump or C compiler, onnxruntime already loaded)."""


def _segments(elf: bytes) -> list[tuple[int, int, int]]:
    """(virtual address, file offset, size) of each loadable segment of an x86-64 ELF file."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise MaskError("not a 64-bit ELF file")
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    out = []
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type == 1:  # PT_LOAD
            out.append((p_vaddr, p_offset, p_filesz))
    return out


def _sites(library: Path) -> list[tuple[int, str]]:
    """(virtual address, mnemonic) of every CPUID and XGETBV instruction in the library."""
    if shutil.which("objdump") is None:
        raise MaskError("objdump (binutils) is needed to find the CPUID/XGETBV instructions")
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    sites = []
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].endswith(":") and fields[1] in PATCHES:
            sites.append((int(fields[0][:-1], 16), fields[1]))
    return sites


def patch_library(source: Path, target: Path) -> int:
    """Writes `source` with its CPUID/XGETBV instructions trapped to `target`; returns how many
    were patched. Checks each site's bytes before replacing them."""
    data = bytearray(source.read_bytes())
    segments = _segments(bytes(data))
    count = 0
    for address, mnemonic in _sites(source):
        original, trap = PATCHES[mnemonic]
        offset = next(
            (off + address - va for va, off, size in segments if va <= address < va + size),
            None,
        )
        if offset is None or data[offset : offset + len(original)] != original:
            raise MaskError(f"{source.name}: no {mnemonic} at {address:#x} as objdump said")
        data[offset : offset + len(trap)] = trap
        count += 1
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, source.stat().st_mode)
    os.replace(tmp, target)
    return count


def _masked_package() -> Path:
    """The folder holding the trapped copy of the installed onnxruntime package (made once;
    the same copy serves every tier: the handler decides what the traps report)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or spec.origin is None:
        raise MaskError("onnxruntime is not installed")
    package = Path(spec.origin).parent
    capi = package / "capi"
    libraries = sorted(p for p in capi.iterdir() if ".so" in p.name and p.is_file())
    stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in libraries)
    root = CACHE / "package"
    done = root / "stamp.txt"
    if done.exists() and done.read_text() == stamp:
        return root
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(package, root / "onnxruntime", symlinks=True)
    for library in libraries:
        patch_library(library, root / "onnxruntime" / "capi" / library.name)
    done.write_text(stamp)
    return root


def _load_handler(tier: str) -> ctypes.CDLL:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise MaskError("a C compiler (cc) is needed to build the trap handler")
    CACHE.mkdir(parents=True, exist_ok=True)
    built = CACHE / "libisa_mask.so"
    if not built.exists() or built.stat().st_mtime < HANDLER.stat().st_mtime:
        tmp = built.with_name(built.name + ".tmp")
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(HANDLER)],
                       check=True)  # fmt: skip
        os.replace(tmp, built)
    handler = ctypes.CDLL(str(built))
    handler.isa_mask_traps.restype = ctypes.c_long
    if handler.isa_mask_install(1 if tier == "avx-vnni" else 0) != 0:
        raise MaskError("could not install the SIGTRAP handler")
    return handler


def use(tier: str) -> None:
    """From now on `import onnxruntime` loads the copy that sees only `tier`'s features."""
    global _handler
    if tier not in TIERS:
        raise MaskError(f"unknown tier {tier!r} (one of {', '.join(TIERS)})")
    if "onnxruntime" in sys.modules:
        raise MaskError("onnxruntime is already imported: call isa_mask.use() before it is")
    root = _masked_package()
    _handler = _load_handler(tier)
    sys.path.insert(0, str(root))


def apply(parser, tier: str | None) -> None:
    """use(tier) for a benchmark's --mlas-isa (nothing without one); a failure becomes the
    argparse parser's one-line error (exit 2)."""
    if not tier:
        return
    try:
        use(tier)
    except (MaskError, OSError, subprocess.CalledProcessError) as e:
        parser.error(f"--mlas-isa {tier}: {e}")


def traps() -> int:
    """How many CPUID/XGETBV traps the handler served (0: the masked copy never ran them)."""
    return _handler.isa_mask_traps() if _handler is not None else 0
