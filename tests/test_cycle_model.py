"""benchmarks/cycle_model.py: callgrind parsing, basic blocks and the llvm-mca step."""

import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cycle_model  # noqa: E402
from cycle_model import Block  # noqa: E402

A, B = "/lib/a.so", "/lib/b.so"

# positions: instr line; relative addresses (+N, -N, *), compressed names, a call whose
# inclusive cost (5000, at the call's address) is not a self count
CALLGRIND = f"""# callgrind format
version: 1
positions: instr line
events: Ir
summary: 44

ob=(1) {A}
fl=(1) ???
fn=(1) loop
0x1000 0 10
+4 * 10
+3 -1 10
cob=(2) {B}
cfn=(2) callee
calls=1 0x2000 0
* * 5000
* * 1
fn=(3) other
0x1010 0 2

ob=(2)
fn=(2)
0x2000 0 1
-16 0 7
+16 0 3
totals: 44
"""

OBJDUMP = """
/lib/a.so:     file format elf64-x86-64


Disassembly of section .text:

0000000000001000 <loop>:
    1000:\tvmovdqu (%rdx),%ymm1
    1004:\tadd    $0x20,%rdx
    1007:\tcall   1100 <callee@plt>
    1009:\tvpaddw %ymm1,%ymm2,%ymm2
    100d:\tcs nopw 0x0(%rax,%rax,1)
    1010:\tsub    $0x1,%rcx
    1014:\tjne    1000 <loop>
    1016:\tret
    1017:\t.byte 0x74
"""


def test_self_counts_follow_relative_addresses_and_skip_inclusive_costs():
    counts = cycle_model.self_counts(CALLGRIND)
    expected = {
        (A, 0x1000): 10, (A, 0x1004): 10, (A, 0x1007): 10 + 1, (A, 0x1010): 2,
        (B, 0x2000): 1 + 3, (B, 0x1FF0): 7,
    }  # fmt: skip
    assert counts == Counter(expected)
    assert sum(counts.values()) == 44


def test_self_counts_need_instruction_positions():
    with pytest.raises(ValueError, match="dump-instr"):
        cycle_model.self_counts("positions: line\nevents: Ir\n")


def test_blocks_are_same_count_runs_ending_at_control_flow():
    listing = cycle_model.parse_listing(OBJDUMP)
    assert [a for a, _ in listing] == [0x1000, 0x1004, 0x1007, 0x1009, 0x100D, 0x1010, 0x1014,
                                       0x1016]  # fmt: skip
    assert listing[2][1] == "call   1100 <callee@plt>"
    counts = Counter({(A, a): 8 for a in (0x1000, 0x1004, 0x1007, 0x1010, 0x1014)})
    counts.update({(A, 0x1009): 3, (A, 0x100D): 3, (A, 0x1016): 1, (B, 0x1009): 99})
    blocks = cycle_model.cut_blocks(A, listing, counts)
    assert blocks == [
        Block(A, 0x1000, 8, ("vmovdqu (%rdx),%ymm1", "add    $0x20,%rdx",
                             "call   1100 <callee@plt>")),
        Block(A, 0x1009, 3, ("vpaddw %ymm1,%ymm2,%ymm2", "cs nopw 0x0(%rax,%rax,1)")),
        Block(A, 0x1010, 8, ("sub    $0x1,%rcx", "jne    1000 <loop>")),
        Block(A, 0x1016, 1, ("ret",)),
    ]  # fmt: skip
    assert [b.weight for b in blocks] == [24, 6, 16, 1]
    assert cycle_model.mca_text(blocks[0].instructions) == (
        "vmovdqu (%rdx),%ymm1\nadd $0x20,%rdx\n"
    )
    assert cycle_model.mca_text(blocks[1].instructions) == "vpaddw %ymm1,%ymm2,%ymm2\n"
    assert cycle_model.mca_text(blocks[3].instructions) == ""
    assert cycle_model._mnemonic("rex.W call ea8c0") == ("call", "ea8c0")
    assert cycle_model.is_control("repz ret")
    memset = Block(A, 0, 64, ("mov %rdx,%rcx", "rep stos %al,%es:(%rdi)"))
    assert memset.rep_strings == 1 and cycle_model.mca_text(memset.instructions) == (
        "mov %rdx,%rcx\n"
    )
    assert cycle_model._mnemonic("lea 0x8(%rip),%rax        # 1234 <x>") == (
        "lea", "0x8(%rip),%rax"
    )  # fmt: skip


def test_hot_blocks_keep_the_hottest_up_to_the_coverage():
    listing = cycle_model.parse_listing(OBJDUMP)
    counts = Counter({(A, a): 100 for a in (0x1010, 0x1014)})  # 200 instructions
    counts.update({(A, 0x1000): 2, (A, 0x1004): 2, (A, 0x1007): 2, (A, 0x1016): 1})
    calls = []

    def disassemble(path, start, stop):
        calls.append((path, start, stop))
        return listing

    kept = cycle_model.hot_blocks(counts, 0.9, disassemble)
    assert calls == [(A, 0x1000, 0x1016 + 16)]  # one cluster, to past its last instruction
    assert [(b.start, b.count) for b in kept] == [(0x1010, 100)]  # 200 of 207 >= 90%
    kept = cycle_model.hot_blocks(counts, 0.99, disassemble)
    assert [(b.start, b.count) for b in kept] == [(0x1010, 100), (0x1000, 2)]


@pytest.mark.skipif(not shutil.which("llvm-mca"), reason="llvm-mca (LLVM) is not installed")
def test_llvm_mca_models_ports_per_cpu():
    # three independent VPSHUFBs: port 5 only on Haswell (3 cycles), two pipes on Zen 3
    shuffles = "vpshufb %ymm0,%ymm1,%ymm2\nvpshufb %ymm0,%ymm3,%ymm4\nvpshufb %ymm0,%ymm5,%ymm6\n"
    texts = [shuffles, "bogus %rax\n", "", "add %rax,%rbx\n"]
    assert cycle_model.mca_cycles(texts, "haswell") == [3.03, None, 0.0, 1.03]
    assert cycle_model.mca_cycles(texts, "znver3") == [1.53, None, 0.0, 1.03]


@pytest.mark.skipif(not shutil.which("llvm-mca"), reason="llvm-mca (LLVM) is not installed")
def test_estimate_spreads_the_average_over_unmodelled_instructions(monkeypatch):
    listing = cycle_model.parse_listing(OBJDUMP)
    monkeypatch.setattr(cycle_model, "disassemble", lambda path, start, stop: listing)
    counts = Counter({(A, 0x1009): 100, (A, 0x100D): 100})  # a 2-instruction block, 100 times
    counts[(A, 0x1016)] = 1  # a lone ret: below the coverage, gets the average
    found = cycle_model.estimate(counts, ["haswell"])["haswell"]
    per_instruction = 100 * cycle_model.mca_cycles(["vpaddw %ymm1,%ymm2,%ymm2\n"], "haswell")[0]
    assert found.modelled == pytest.approx(200 / 201)
    assert found.cycles == pytest.approx(per_instruction * 201 / 200)
    # a memset's 3200 bytes: valgrind's 3200 counts of one rep stos, 3200 / 32 cycles
    memset = "    2000:\trep stos %al,%es:(%rdi)\n    2002:\tret\n"
    monkeypatch.setattr(cycle_model, "disassemble", lambda *_: cycle_model.parse_listing(memset))
    found = cycle_model.estimate(Counter({(A, 0x2000): 3200}), ["haswell"])["haswell"]
    assert (found.cycles, found.modelled) == (100.0, 1.0)
