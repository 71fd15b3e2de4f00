"""Progress for long work (rich): bars with an ETA for loops that can be counted, a spinner
for steps that cannot; plain lines when the output is not a terminal."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Sized
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
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
    began = time.monotonic()
    state = {"done": 0, "last": began}

    def advance(label: str = "") -> None:
        state["done"] += 1
        now, done = time.monotonic(), state["done"]
        if now - state["last"] >= 60 or done == total:
            state["last"] = now
            left = (now - began) / done * (total - done)
            eta = f", about {_duration(left)} left" if done < total else ""
            print(
                f"{description}: {done}/{total} {unit}s {label}".rstrip()
                + f" ({_duration(now - began)}{eta})",
                file=sys.stderr,
                flush=True,
            )

    yield advance


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class Steps:
    """Steps that cannot be counted (a trace, a file write), one after another: each is
    printed as it starts with the time so far; while it runs, a terminal shows a spinner with
    its elapsed time and a log gets a line a minute, so a long step is never silent."""

    def __init__(self, start: float | None = None, every: float = 60.0):
        self.start = time.perf_counter() if start is None else start
        self.every = every
        self.console = Console(stderr=True)
        self._live = None
        self._timer = None

    def __call__(self, text: str) -> None:
        self.close()
        print(f"  {time.perf_counter() - self.start:5.0f} s  {text}", flush=True)
        if self.console.is_terminal:
            self._live = Progress(
                SpinnerColumn(), TextColumn(text), TimeElapsedColumn(),
                console=self.console, transient=True,
            )  # fmt: skip
            self._live.start()
            self._live.add_task(text, total=None)
        else:
            self._heartbeat(text, time.perf_counter())

    def _heartbeat(self, text: str, began: float) -> None:
        def tick() -> None:
            print(f"  ... {text}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
            self._heartbeat(text, began)

        self._timer = threading.Timer(self.every, tick)
        self._timer.daemon = True
        self._timer.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *_) -> None:
        self.close()
