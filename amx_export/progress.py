"""Progress bars (rich) for long loops; quiet when the output is not a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sized
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_over(description: str, unit: str = "item") -> Callable[[Iterable], Iterable]:
    """A wrapper that shows a bar while iterating (total taken from len() when known)."""

    def wrap(items: Iterable):
        total = len(items) if isinstance(items, Sized) else None
        columns = (
            TextColumn(f"{description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(f"{unit}s"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, transient=True) as progress:
            yield from progress.track(items, total=total)

    return wrap


@contextmanager
def counting_progress(description: str, total: int, unit: str = "item"):
    """Yields ``advance(label)``; a live bar on a terminal, otherwise a plain line per minute
    (so that a long run logged to a file still shows where it is)."""
    console = Console(stderr=True)
    if console.is_terminal:
        columns = (
            TextColumn(description),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(f"{unit}s"),
            TextColumn("{task.fields[label]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(description, total=total, label="")
            yield lambda label="": progress.update(task, advance=1, label=label)
        return
    state = {"done": 0, "last": time.monotonic()}

    def advance(label: str = "") -> None:
        state["done"] += 1
        now = time.monotonic()
        if now - state["last"] >= 60 or state["done"] == total:
            state["last"] = now
            print(
                f"{description}: {state['done']}/{total} {unit}s {label}",
                file=sys.stderr,
                flush=True,
            )

    yield advance
