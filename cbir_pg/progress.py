"""One progress bar for the whole project (rich, on stderr): import, ingest, the evaluation runner and
the index build all look the same: description, bar, percentage, done/total, rate in their unit, elapsed time.
Disabled bars cost nothing, so library code can always create one.

>>> with progress_bar(1000, "ingest efficientnet_lite0", unit="img") as bar:   # doctest: +SKIP
...     bar.advance(64)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class ProgressBar:
    """A rich progress bar with a rate column (``<n> img/s``); every method is a no-op when disabled."""

    def __init__(self, total: int | None, description: str, *, unit: str = "img", enabled: bool = True):
        self.enabled = enabled
        self.completed = 0
        self._progress: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task):  # type: ignore[no-untyped-def]
                return Text(f"{task.speed:,.0f} {unit}/s" if task.speed else f"- {unit}/s")

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            Rate(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(description, total=total)
        self._progress.start()

    def advance(self, n: int = 1) -> None:
        self.completed += n
        if self._progress is not None:
            self._progress.update(self._task, completed=self.completed)

    def set(self, completed: int) -> None:
        """Jump to an absolute count (e.g. rows counted in the database)."""
        self.completed = completed
        if self._progress is not None:
            self._progress.update(self._task, completed=completed)

    def __call__(self, done: int, total: int | None = None) -> None:
        """A ``(done, total)`` callback (the evaluation runner's ``progress=`` form)."""
        self.set(done)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    total: int | None, description: str, *, unit: str = "img", enabled: bool = True
) -> ProgressBar:
    return ProgressBar(total, description, unit=unit, enabled=enabled)


def track(items: Iterable[T], bar: ProgressBar) -> Iterator[T]:
    """Iterate ``items``, advancing ``bar`` by one per item."""
    for item in items:
        yield item
        bar.advance()
