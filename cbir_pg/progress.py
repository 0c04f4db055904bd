"""One progress bar for the whole project (rich, on stderr): import, ingest, the evaluation runner and
the index build all look the same: description, bar, percentage, done/total, rate in their unit, elapsed time.
Disabled bars cost nothing, so library code can always create one.

When stdout or stderr is not a terminal (``make demo | tee demo.log``, CI, a log file) a live bar would
show only at the end or garble the log, so plain lines are printed on stderr instead (stdout stays clean
for ``--format json``), at most one every ``CBIR_PG_PROGRESS_EVERY`` seconds (default 5) and one when the
bar closes: description, done/total, percentage, rate, ETA.

>>> with progress_bar(1000, "ingest efficientnet_lite0", unit="img") as bar:   # doctest: +SKIP
...     bar.advance(64)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
#: seconds between two plain progress lines (stdout not a terminal)
DEFAULT_EVERY = 5.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def plain_line(description: str, done: int, total: int | None, elapsed: float, unit: str) -> str:
    """One progress line: ``ingest x: 1,280/5,810 img (22%) · 45 img/s · ETA 1m40s``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    count = f"{done:,}/{total:,} {unit} ({100 * done / total:.0f}%)" if total else f"{done:,} {unit}"
    parts = [f"{description}: {count}", f"{rate:,.0f} {unit}/s" if rate else f"- {unit}/s"]
    if total and rate and done < total:
        parts.append(f"ETA {_duration((total - done) / rate)}")
    elif total and done >= total:
        parts.append(f"done in {_duration(elapsed)}")
    return " · ".join(parts)


class PlainProgress:
    """Plain progress lines on ``stream`` at most every ``every`` seconds, and a last one on close."""

    def __init__(self, total: int | None, description: str, unit: str, stream: Any, every: float):
        self.total, self.description, self.unit = total, description, unit
        self._stream, self._every = stream, every
        self._start = self._last = time.monotonic()
        self.done = 0
        self._printed_at: int | None = None

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._last >= self._every:
            self._print(now)

    def _print(self, now: float) -> None:
        self._last = now
        self._printed_at = self.done
        print(
            plain_line(self.description, self.done, self.total, now - self._start, self.unit),
            file=self._stream,
        )
        self._stream.flush()

    def close(self) -> None:
        if self._printed_at != self.done:
            self._print(time.monotonic())


def _plain_wanted() -> bool:
    try:
        return not (sys.stdout.isatty() and sys.stderr.isatty())
    except (AttributeError, ValueError):
        return True


def _every() -> float:
    try:
        return max(0.0, float(os.environ.get("CBIR_PG_PROGRESS_EVERY", DEFAULT_EVERY)))
    except ValueError:
        return DEFAULT_EVERY


class ProgressBar:
    """A rich progress bar with a rate column (``<n> img/s``); every method is a no-op when disabled."""

    def __init__(self, total: int | None, description: str, *, unit: str = "img", enabled: bool = True):
        self.enabled = enabled
        self.completed = 0
        self._progress: Any = None
        self._plain: PlainProgress | None = None
        if not enabled:
            return
        if _plain_wanted():
            self._plain = PlainProgress(total, description, unit, sys.stderr, _every())
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
        if self._plain is not None:
            self._plain.update(self.completed)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.completed)

    def set(self, completed: int) -> None:
        """Jump to an absolute count (e.g. rows counted in the database)."""
        self.completed = completed
        if self._plain is not None:
            self._plain.update(completed)
        if self._progress is not None:
            self._progress.update(self._task, completed=completed)

    def __call__(self, done: int, total: int | None = None) -> None:
        """A ``(done, total)`` callback (the evaluation runner's ``progress=`` form)."""
        self.set(done)

    def close(self) -> None:
        if self._plain is not None:
            self._plain.close()
            self._plain = None
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
