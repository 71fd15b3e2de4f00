"""Progress bars (rich) for long loops; quiet when the output is not a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_over(description: str, unit: str = "item") -> Callable[[Iterable], Iterable]:
    """A wrapper that shows a bar while iterating (total taken from len() when known)."""

    def wrap(items: Iterable):
        total = len(items) if isinstance(items, Sized) else None
        columns = (
            TextColumn(f"{description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(f"{unit}s"), TimeElapsedColumn(),
        )  # fmt: skip
        with Progress(*columns, transient=True) as progress:
            yield from progress.track(items, total=total)

    return wrap
