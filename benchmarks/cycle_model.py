"""Estimated cycles of the code a callgrind run executed: llvm-mca's port model per basic block.

callgrind (`--dump-instr=yes`) gives each executed instruction's count; objdump gives the code
at those addresses. The code is cut into basic blocks (runs of consecutive instructions with
the same count, ending at a branch, call or return); each block's cycles per execution are
llvm-mca's steady-state estimate (Total Cycles / iterations of the block repeated 100 times)
for one CPU model; the estimate is the sum of count x cycles. Blocks are taken hottest first
until they hold COVERAGE of the counted instructions; the rest (cold code, code objdump or
llvm-mca cannot read) get the covered blocks' average cycles per instruction.

A static model, not a measurement: no cache misses, no branch mispredictions, no memory
bandwidth; branches, calls and nops are not modelled (taken to issue for free beside the
rest), and straight-line blocks are costed at loop throughput. rep-prefixed string
instructions (memcpy, memset), which valgrind counts once per element, cost
REP_ELEMENT_CYCLES per element instead.
"""

from __future__ import annotations

import bisect
import functools
import re
import shutil
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

COVERAGE = 0.995
ITERATIONS = 100
CLUSTER_GAP = 1024  # executed addresses further apart than this are disassembled separately
MAX_INSTRUCTION = 15  # bytes: disassemble this far past the last executed address
# objdump's prefix words (and rex*) that llvm-mca's assembler rejects or that only pad
PREFIXES = {"notrack", "data16", "cs", "ds", "bnd"}
CONTROL = ("j", "call", "ret", "loop", "syscall", "ud2", "hlt")
# valgrind counts a rep-prefixed string instruction once per element, llvm-mca costs it as a
# long microcoded step: cost each element instead at fast-string rates, ~32 bytes per cycle
REP = ("rep", "repz", "repnz", "repe", "repne")
STRINGS = ("movs", "stos", "cmps", "scas", "lods", "ins", "outs")
REP_ELEMENT_CYCLES = 1 / 32


@dataclass(frozen=True)
class Block:
    """A basic block: its object file, first address, execution count and AT&T text."""

    path: str
    start: int
    count: int
    instructions: tuple[str, ...]

    @property
    def weight(self) -> int:
        """Instructions it executed: count x length."""
        return self.count * len(self.instructions)

    @property
    def rep_strings(self) -> int:
        """How many of its instructions are rep-prefixed string instructions."""
        return sum(_mnemonic(i)[0] in REP for i in self.instructions)


def _name(names: dict[str, str], value: str) -> str:
    """A callgrind name, possibly compressed: `(id) name` defines id, `(id)` refers back."""
    match = re.match(r"\((\d+)\)(?: (.*))?$", value)
    if not match:
        return value
    if match.group(2) is not None:
        names[match.group(1)] = match.group(2)
    return names.get(match.group(1), "")


def _address(field: str, last: int) -> int:
    """A cost line's instruction subposition: absolute, +N / -N relative, or * the same."""
    if field == "*":
        return last
    if field[0] in "+-":
        return last + int(field, 0)
    return int(field, 0)


def self_counts(text: str) -> Counter[tuple[str, int]]:
    """Self instruction counts per (object path, address) of one callgrind dump.

    The cost line after `calls=` is that call's inclusive cost, at the call's address: it moves
    the relative-address base but is not the call instruction's own count.
    """
    objects: dict[str, str] = {}  # ob= and cob= share one id space
    counts: Counter[tuple[str, int]] = Counter()
    positions = 0
    path, last, inclusive = "", 0, False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("positions:"):
            names = line.split()[1:]
            if not names or names[0] != "instr":
                raise ValueError("callgrind dump has no instruction addresses (--dump-instr=yes)")
            positions = len(names)
        elif line[0].isdigit() or line[0] in "+-*":
            fields = line.split()
            last = _address(fields[0], last)
            if inclusive:
                inclusive = False
            elif len(fields) > positions:
                counts[(path, last)] += int(fields[positions])
        elif line.startswith("ob="):
            path = _name(objects, line[3:])
        elif line.startswith("cob="):
            _name(objects, line[4:])
        elif line.startswith("calls="):
            inclusive = True
    if not positions:
        raise ValueError("not a callgrind dump: no positions line")
    return counts


def parse_listing(text: str) -> list[tuple[int, str]]:
    """(address, instruction text) of each line of `objdump -d --no-show-raw-insn` output."""
    listing = []
    for line in text.splitlines():
        match = re.match(r"\s*([0-9a-f]+):\t(.*)$", line)
        if match and not match.group(2).startswith(("(bad)", ".byte")):
            listing.append((int(match.group(1), 16), match.group(2).strip()))
    return listing


def _mnemonic(instruction: str) -> tuple[str, str]:
    """(mnemonic, operands) with objdump's prefixes, `<symbol>` and `# comment` removed.

    A rep prefix stays the mnemonic of a string instruction (`rep`, `stos ...`) and goes
    elsewhere (`repz ret`).
    """
    text = re.sub(r"\s*<[^>]*>", "", instruction.split("#")[0]).strip()
    words = text.split(None, 1)
    while len(words) == 2 and (
        words[0] in PREFIXES
        or words[0].startswith("rex")
        or (words[0] in REP and not words[1].startswith(STRINGS))
    ):
        words = words[1].split(None, 1)
    return (words[0], words[1] if len(words) == 2 else "") if words else ("", "")


def is_control(instruction: str) -> bool:
    """A branch, call or return: ends a basic block."""
    return _mnemonic(instruction)[0].startswith(CONTROL)


def cut_blocks(path: str, listing: list[tuple[int, str]], counts: Counter) -> list[Block]:
    """Executed basic blocks of one listing: same-count runs, split after control flow."""
    blocks: list[Block] = []
    run: list[str] = []
    start = count = 0

    def close() -> None:
        if run and count:
            blocks.append(Block(path, start, count, tuple(run)))
        run.clear()

    for address, instruction in listing:
        executed = counts.get((path, address), 0)
        if executed != count or not run:
            close()
            start, count = address, executed
        run.append(instruction)
        if is_control(instruction):
            close()
    close()
    return blocks


@functools.cache
def disassemble(path: str, start: int, stop: int) -> tuple[tuple[int, str], ...]:
    """objdump's listing of [start, stop) in an ELF file (empty if it cannot be read)."""
    if not Path(path).is_file():
        return ()
    done = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
         f"--stop-address={stop:#x}", path],
        capture_output=True, text=True,
    )  # fmt: skip
    return tuple(parse_listing(done.stdout)) if done.returncode == 0 else ()


def clusters(counts: Counter) -> list[tuple[str, int, int, int]]:
    """(path, start, stop, instructions) of executed address ranges, most instructions first."""
    by_path: dict[str, list[int]] = {}
    for path, address in counts:
        by_path.setdefault(path, []).append(address)
    found = []
    for path, addresses in by_path.items():
        addresses.sort()
        first = previous = addresses[0]
        total = 0
        for address in addresses:
            if address - previous > CLUSTER_GAP:
                found.append((path, first, previous + MAX_INSTRUCTION + 1, total))
                first, total = address, 0
            total += counts[(path, address)]
            previous = address
        found.append((path, first, previous + MAX_INSTRUCTION + 1, total))
    return sorted(found, key=lambda c: -c[3])


def hot_blocks(counts: Counter, coverage: float = COVERAGE, listing=None) -> list[Block]:
    """The hottest basic blocks that together hold `coverage` of the counted instructions.

    listing(path, start, stop) gives the code (default: objdump's, `disassemble`).
    """
    listing = listing or disassemble
    total = sum(counts.values())
    blocks: list[Block] = []
    seen = 0
    for path, start, stop, instructions in clusters(counts):
        if seen >= coverage * total:
            break
        seen += instructions
        blocks += cut_blocks(path, list(listing(path, start, stop)), counts)
    blocks.sort(key=lambda b: -b.weight)
    kept, held = [], 0
    for block in blocks:
        if held >= coverage * total:
            break
        kept.append(block)
        held += block.weight
    return kept


def mca_text(instructions: tuple[str, ...]) -> str:
    """The block as llvm-mca input: no control flow, nops, rep strings or objdump annotations."""
    lines = []
    for instruction in instructions:
        mnemonic, operands = _mnemonic(instruction)
        if not mnemonic or mnemonic.startswith(CONTROL + ("nop", "endbr")) or mnemonic in REP:
            continue
        if mnemonic == "xchg" and operands.replace(" ", "") == "%ax,%ax":  # a 2-byte nop
            continue
        lines.append(f"{mnemonic} {operands}".strip())
    return "\n".join(lines) + "\n" if lines else ""


_CYCLES: dict[tuple[str, str], float | None] = {}  # (block text, cpu): cycles, for the run


def _mca_batch(texts: list[str], cpu: str) -> list[float | None]:
    """One llvm-mca run, one code region per text; None where a region has an error."""
    source, first_lines, line = [], [], 1
    for i, text in enumerate(texts):
        first_lines.append(line + 1)
        source.append(f"# LLVM-MCA-BEGIN r{i}\n{text}# LLVM-MCA-END\n")
        line += text.count("\n") + 2
    done = subprocess.run(
        ["llvm-mca", f"-mcpu={cpu}", f"-iterations={ITERATIONS}", "-resource-pressure=0",
         "-instruction-info=0", "-"],
        input="".join(source), capture_output=True, text=True,
    )  # fmt: skip
    cycles: list[float | None] = [None] * len(texts)
    for name, total in re.findall(r"Code Region - r(\d+)\n.*?^Total Cycles:\s+(\d+)", done.stdout,
                                  re.M | re.S):  # fmt: skip
        cycles[int(name)] = int(total) / ITERATIONS
    for bad in re.findall(r"^<stdin>:(\d+):\d+: error", done.stderr, re.M):
        cycles[bisect.bisect_right(first_lines, int(bad)) - 1] = None
    return cycles


def mca_cycles(texts: list[str], cpu: str, workers: int = 2) -> list[float | None]:
    """llvm-mca's cycles per iteration of each text on `cpu`: Total Cycles / iterations.

    None where llvm-mca rejects a text; 0 for an empty one. `workers` llvm-mca processes.
    """
    todo = sorted({t for t in texts if t and (t, cpu) not in _CYCLES})
    chunks = [todo[i::workers] for i in range(workers) if todo[i::workers]]
    with ThreadPoolExecutor(workers) as pool:
        for chunk, got in zip(chunks, pool.map(lambda c: _mca_batch(c, cpu), chunks), strict=True):
            _CYCLES.update(((t, cpu), c) for t, c in zip(chunk, got, strict=True))
    return [_CYCLES[(t, cpu)] if t else 0.0 for t in texts]


def check_tools() -> None:
    """Raises one line if objdump or llvm-mca is missing."""
    for tool in ("objdump", "llvm-mca"):
        if not shutil.which(tool):
            raise SystemExit(f"error: --cycles needs {tool} on PATH")


@dataclass(frozen=True)
class Estimate:
    """Estimated cycles of one dump on one CPU model, and how much of it llvm-mca modelled."""

    cycles: float
    modelled: float  # fraction of the counted instructions in blocks llvm-mca costed


def estimate(counts: Counter, cpus: list[str]) -> dict[str, Estimate]:
    """Cycles of all counted instructions per CPU model (see the module docstring)."""
    total = sum(counts.values())
    blocks = hot_blocks(counts)
    texts = [mca_text(block.instructions) for block in blocks]
    found = {}
    for cpu in cpus:
        cycles = mca_cycles(texts, cpu)
        costed = [(b, c) for b, c in zip(blocks, cycles, strict=True) if c is not None]
        held = sum(b.weight for b, _ in costed)
        spent = sum(b.count * (c + b.rep_strings * REP_ELEMENT_CYCLES) for b, c in costed)
        rest = spent / held * (total - held) if held else 0.0
        found[cpu] = Estimate(spent + rest, held / total if total else 0.0)
    return found
