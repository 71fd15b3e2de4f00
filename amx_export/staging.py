"""Writing whole or not at all under signals: a staging folder that is always removed, and a
block that SIGINT / SIGTERM cannot cut in two."""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then are raised again.

    A handler that only takes note, rather than a blocked signal mask: Python runs handlers
    in the main thread whichever thread the signal reached (OpenBLAS has threads of its own).
    """
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda number, _frame: caught.append(number)) for s in held}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in caught[:1]:
            signal.raise_signal(number)


@contextlib.contextmanager
def staging_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new folder in `parent`, removed on the way out whatever happens. It is created with
    the signals held and inside the cleanup's ``try``: a SIGTERM the moment it appears (as
    tests send it) is raised once the cleanup is sure to run. OSError from mkdtemp passes."""
    folder = None
    try:
        with signals_held():
            folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        yield folder
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
