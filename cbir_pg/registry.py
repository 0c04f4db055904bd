"""One registry pattern for every pluggable family (encoders, dataset adapters), as timm does it.

A family module registers its entries with the decorator of a :class:`Registry`; the package's
``__init__`` imports its family modules (so importing ``cbir_pg.encoders`` registers every encoder);
the registry module itself imports no family, so there is no import cycle between them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from cbir_pg.errors import CbirError, NotFoundError

T = TypeVar("T")


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'efficientnet_lite0'?)`` for the closest known name, or "" when none is close
    (the hint commands and options already give for a typo)."""
    known = sorted(known)
    close = difflib.get_close_matches(str(word), known, n=3, cutoff=0.6)
    if not close:
        return ""
    best = difflib.SequenceMatcher(None, str(word), close[0]).ratio()
    tied = [c for c in close if difflib.SequenceMatcher(None, str(word), c).ratio() == best]
    return " (did you mean " + " or ".join(repr(c) for c in sorted(tied)) + "?)"


class Registry(Generic[T]):
    """Named entries of one kind. ``what`` names the kind in errors (``unknown encoder 'x'; known: ...``)."""

    def __init__(self, what: str, *, error: type[CbirError] = NotFoundError, hint: str = "") -> None:
        self.what = what
        self.error = error
        self.hint = hint
        self._entries: dict[str, T] = {}

    def add(self, key: str, entry: T, *, replace_same: bool = False) -> T:
        old = self._entries.get(key)
        if old is not None and not (replace_same and old is entry):
            raise ValueError(f"{self.what} {key!r} is registered twice")
        self._entries[key] = entry
        return entry

    def register(self, key: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def wrap(entry: T) -> T:
            return self.add(key, entry)

        return wrap

    def get(self, key: str) -> T:
        if key not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise self.error(
                f"unknown {self.what} {key!r}{did_you_mean(key, self._entries)}; known: {known}{self.hint}"
            )
        return self._entries[key]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        return sorted(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())
