"""benchmarks/isa_mask.py: a library copy whose CPUID/XGETBV trap into the handler sees the
CPU without AVX-512 (and without AVX-VNNI for "avx2"), everything else as it is."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64")
    or shutil.which("objdump") is None
    or shutil.which("cc") is None,
    reason="needs an x86-64 CPU, objdump and a C compiler",
)

PROBE = r"""
#include <cpuid.h>
#include <stdint.h>
unsigned probe_cpuid(unsigned leaf, unsigned sub, unsigned reg) {
  unsigned r[4];
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
  return r[reg];
}
unsigned long long probe_xcr0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((unsigned long long)hi << 32) | lo;
}
"""

# Runs in a child: the handler is process-wide. Prints the real and the masked values.
CHILD = textwrap.dedent("""
    import ctypes, json, sys
    sys.path.insert(0, sys.argv[1])
    import isa_mask
    source, target, tier = sys.argv[2], sys.argv[3], sys.argv[4]
    patched = isa_mask.patch_library(__import__("pathlib").Path(source),
                                     __import__("pathlib").Path(target))
    isa_mask._handler = isa_mask._load_handler(tier)
    out = {"patched": patched}
    for name, path in (("real", source), ("masked", target)):
        lib = ctypes.CDLL(path)
        lib.probe_xcr0.restype = ctypes.c_ulonglong
        lib.probe_cpuid.restype = ctypes.c_uint
        out[name] = {
            "leaf0_ebx": lib.probe_cpuid(0, 0, 1), "leaf1_ecx": lib.probe_cpuid(1, 0, 2),
            "leaf7_ebx": lib.probe_cpuid(7, 0, 1), "leaf7_ecx": lib.probe_cpuid(7, 0, 2),
            "leaf71_eax": lib.probe_cpuid(7, 1, 0), "xcr0": lib.probe_xcr0(),
        }
    out["traps"] = isa_mask.traps()
    print(json.dumps(out))
""")


def _probe(tmp_path: Path, tier: str) -> dict:
    source = tmp_path / "libprobe.so"
    (tmp_path / "probe.c").write_text(PROBE)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(source), str(tmp_path / "probe.c")],
                   check=True)  # fmt: skip
    target = tmp_path / "libprobe_masked.so"
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(BENCHMARKS), str(source), str(target), tier],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


AVX2, AVX512F, AVX512BW = 1 << 5, 1 << 16, 1 << 30
VBMI, AVX512_VNNI = 1 << 1, 1 << 11
AVX_VNNI, AVX512_BF16 = 1 << 4, 1 << 5


@pytest.mark.parametrize("tier", ["avx2", "avx-vnni"])
def test_masked_copy_hides_avx512_and_keeps_the_rest(tmp_path, tier):
    out = _probe(tmp_path, tier)
    real, masked = out["real"], out["masked"]
    assert out["patched"] == 2  # the probe's one CPUID and one XGETBV
    assert out["traps"] == 6  # five CPUIDs and one XGETBV, each through the handler
    # leaves and registers it does not mask read as on the CPU
    assert masked["leaf0_ebx"] == real["leaf0_ebx"]
    assert masked["leaf1_ecx"] == real["leaf1_ecx"]
    assert masked["leaf7_ebx"] & AVX2 == real["leaf7_ebx"] & AVX2
    assert masked["leaf7_ebx"] & (AVX512F | AVX512BW) == 0
    assert masked["leaf7_ecx"] & (VBMI | AVX512_VNNI) == 0
    assert masked["leaf7_ebx"] | 0xDC230000 == real["leaf7_ebx"] | 0xDC230000
    assert masked["leaf71_eax"] & AVX512_BF16 == 0
    kept = real["leaf71_eax"] & AVX_VNNI if tier == "avx-vnni" else 0
    assert masked["leaf71_eax"] & AVX_VNNI == kept
    # XCR0: the x87, SSE and AVX states stay, the three AVX-512 states go
    assert masked["xcr0"] & 0x7 == real["xcr0"] & 0x7
    assert masked["xcr0"] == real["xcr0"] & ~0xE0


def test_patch_refuses_a_file_that_is_not_elf(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import isa_mask
    finally:
        sys.path.remove(str(BENCHMARKS))
    bad = tmp_path / "not-a-library.so"
    bad.write_bytes(b"#!/bin/sh\n")
    with pytest.raises((isa_mask.MaskError, subprocess.CalledProcessError)):
        isa_mask.patch_library(bad, tmp_path / "out.so")
    assert not (tmp_path / "out.so").exists()
