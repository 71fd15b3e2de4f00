"""README.md's code blocks as things to run: which to run, how, and what each must print.

Convention (written for README.md's authors; tests/test_readme.py runs it):

- A ```bash block is run with bash (-e, -o pipefail) from the repository root; a ```python
  block with .venv/bin/python. Blocks in other languages (```text, ```console) are output.
- A ```text block right after a command block is what that block prints: each non-empty line
  of it, without its outer spaces, must appear in the block's output (stdout and stderr
  together), each on a later line than the one before; ``...`` (with the spaces around it)
  stands for any text within the line (numbers that differ between models and machines).
- An HTML comment on the line right above a block's fence (invisible on GitHub) says how it
  is run instead, and why:
    <!-- readme-test: skip (the reason) -->   not run;
    <!-- readme-test: small-model -->         run with the argument ``smollm2`` replaced by
                                              a small model (it takes minutes on SmolLM2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RUNNABLE = {"bash": "bash", "sh": "bash", "python": "python"}
OUTPUT = {"text", "console"}
MARKER = re.compile(r"<!--\s*readme-test:\s*(?P<kind>skip|small-model)\s*(?P<rest>.*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
SMOLLM2_ARG = re.compile(r"(?<=\s)smollm2(?=\s|$)", re.MULTILINE)


@dataclass
class Block:
    line: int  # 1-based line of the opening fence in README.md
    lang: str
    code: str
    skip: str | None = None  # the reason, for a block that is not run
    small_model: bool = False
    expected: list[str] = field(default_factory=list)  # lines of the ```text block after it

    @property
    def name(self) -> str:
        first = next((s for s in self.code.splitlines() if s.strip()), "")
        return f"README.md:{self.line} {first.strip()[:60]}"

    def command(self, small_model_dir: str | None = None) -> str:
        if not self.small_model:
            return self.code
        if small_model_dir is None:
            raise ValueError(f"{self.name}: a small-model block needs the small model's folder")
        return SMOLLM2_ARG.sub(small_model_dir, self.code)


def blocks(markdown: str) -> list[Block]:
    """Every fenced block with a language, markers and expected output attached."""
    lines = markdown.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence["lang"]
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"README.md:{start + 1}: a code block that is never closed")
        i += 1
        marker = MARKER.search(lines[start - 1]) if start else None
        block = Block(start + 1, lang, "\n".join(body) + "\n")
        if marker and marker["kind"] == "skip":
            reason = marker["rest"].strip()
            if not (reason.startswith("(") and reason.endswith(")") and len(reason) > 2):
                raise ValueError(f"{block.name}: a skip marker needs its reason in parentheses")
            block.skip = reason[1:-1]
        elif marker:
            block.small_model = True
        if lang in OUTPUT:
            previous = found[-1] if found else None
            if previous is None or previous.lang not in RUNNABLE or previous.expected:
                raise ValueError(f"{block.name}: output with no command block right before it")
            previous.expected = [s.strip() for s in body if s.strip()]
            continue
        if lang:
            found.append(block)
    return found


def runnable(markdown: str) -> list[Block]:
    return [b for b in blocks(markdown) if b.lang in RUNNABLE]


def missing_output(expected: list[str], output: str) -> str | None:
    """The first expected line that does not appear in ``output`` after the previous ones
    (``...`` matches any text within a line), or None when all do, in order."""
    lines = output.replace("\r", "\n").splitlines()  # progress bars redraw with \r
    at = 0
    for want in expected:
        parts = re.split(r"\s*\.\.\.\s*", want)  # "..." takes the spaces around it too
        pattern = re.compile(".*?".join(re.escape(part) for part in parts))
        while at < len(lines) and not pattern.search(lines[at]):
            at += 1
        if at == len(lines):
            return want
        at += 1
    return None
