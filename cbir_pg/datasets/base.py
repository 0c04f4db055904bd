"""The adapter contract and the registry.

An adapter reads one source layout as its provider publishes it and yields, streaming, one
:class:`Record` per image (or a :class:`RowError` for a bad row). It never touches the database and
never decodes images: the importer (:mod:`cbir_pg.datasets.importer`) does both, in batches.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cbir_pg.errors import ConfigError, InputError
from cbir_pg.registry import Registry

#: the longest value (UTF-8 bytes) each text field of a record may hold
FIELD_LIMITS: dict[str, int] = {
    "uri": 1024,
    "patient": 256,
    "study": 256,
    "sex": 16,
    "view": 64,
    "modality": 16,
    "region": 64,
    "labels": 200,
}


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe to store and print: undecodable bytes of a file name (surrogate escapes) and control
    characters escaped, and cut to ``limit`` characters with an ellipsis."""
    import os

    if any("\udc80" <= c <= "\udcff" for c in text):
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass
class Record:
    """One image as the source describes it.

    ``split``: ``train``/``val``/``test``; ``None`` (assign by patient hash with the adapter's
    fractions) or ``trainval`` (patient-wise 90:10 train/val). ``labels``: source labels, mapped to
    harmonised keys by the label map. ``pixels``: an RGB array when the adapter already holds the
    image (MedMNIST), so the importer need not read the file back.
    """

    uri: str
    labels: list[str] = field(default_factory=list)
    split: str | None = None
    patient: str | None = None
    sex: str | None = None
    age: float | None = None
    study: str | None = None
    view: str | None = None
    modality: str | None = None
    region: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    exclusion: str | None = None
    pixels: Any = None
    write: Callable[[], None] | None = None

    def nul_field(self) -> str | None:
        """The name of a text field holding a NUL byte (PostgreSQL text cannot store one), if any."""
        for name in ("uri", "patient", "sex", "study", "view", "modality", "region"):
            value = getattr(self, name)
            if isinstance(value, str) and "\x00" in value:
                return name
        if any("\x00" in label for label in self.labels):
            return "labels"
        return None

    def problem(self) -> tuple[str, str] | None:
        """``(reason, message)`` when a field cannot be stored as it is: a NUL byte (``malformed_row``),
        text that is not valid Unicode, e.g. a file name in another encoding (``bad_encoding``), or a
        value longer than :data:`FIELD_LIMITS` (``field_too_long``; a btree index entry holds at most
        2,704 bytes, so a longer path, patient id or label would abort the whole batch's COPY)."""
        bad = self.nul_field()
        if bad:
            return "malformed_row", f"the {bad} field holds a NUL byte"
        fields = [(name, getattr(self, name)) for name in FIELD_LIMITS if name != "labels"]
        fields += [("labels", label) for label in self.labels]
        for name, value in fields:
            if not isinstance(value, str):
                continue
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                return "bad_encoding", f"the {name} field is not valid UTF-8 text: {printable(value, 120)}"
            if size > FIELD_LIMITS[name]:
                return (
                    "field_too_long",
                    f"the {name} field is {size} bytes long (limit {FIELD_LIMITS[name]}): {printable(value, 120)}",
                )
        return None


@dataclass
class RowError:
    """A row the adapter could not turn into a record (recorded in ``cbir.error``, import continues)."""

    source: str
    reason: str
    message: str


class UnknownLabel(InputError):
    pass


class Adapter:
    """Base class. Subclasses set the class attributes and implement :meth:`records`."""

    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""
    source_url: ClassVar[str | None] = None
    licence: ClassVar[str | None] = None
    citation: ClassVar[str | None] = None
    #: images with several labels are excluded from the single-label benchmark (reason ``multi_label``)
    single_label: ClassVar[bool] = True
    #: an image with no harmonised label is excluded (reason ``no_label``)
    require_label: ClassVar[bool] = True
    #: the source patient ids identify people: store salted hashes (DICOM)
    identifying_ids: ClassVar[bool] = False
    #: flag near duplicates (identical pHash) besides exact ones; off where images are too small for a
    #: perceptual hash to tell similar from identical (MedMNIST's 28x28 thumbnails)
    near_dedupe: ClassVar[bool] = True
    options_help: ClassVar[dict[str, str]] = {}
    #: the source's tables alone carry labels and splits, so ``--metadata-only`` may import them without
    #: the image files (the published DKFZ split CSVs)
    metadata_only: ClassVar[bool] = False
    #: the importer hands the adapter the uris already in the dataset (``known``) before :meth:`records`,
    #: so a source that is slow to read (a PACS) skips them without fetching them again
    wants_known: ClassVar[bool] = False
    #: each run imports only new material (the C-STORE listener's batches): the errors recorded by earlier
    #: runs stay in ``cbir.error`` instead of being cleared at the start of the run
    incremental: ClassVar[bool] = False

    @classmethod
    def resolve_root(cls, root: str | Path) -> Path | str:
        """The source as given on the command line, checked: a folder or file that exists (a URL for the
        network adapters)."""
        path = Path(root).expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"{cls.kind}: {path} does not exist")
        return path

    def __init__(self, root: Path, key: str, options: dict[str, Any]):
        self.root = Path(root).expanduser()
        self.key = key
        self.options = dict(options)
        unknown = set(self.options) - set(self.options_help)
        if unknown:
            known = ", ".join(sorted(self.options_help)) or "none"
            raise ConfigError(f"{self.kind}: unknown option(s) {', '.join(sorted(unknown))}; known: {known}")
        self.fractions = None  # set by subclasses that split without official splits

    @classmethod
    def default_key(cls, root: Path, options: dict[str, Any]) -> str:
        return cls.kind.replace("-", "_")

    @staticmethod
    def key_from_name(name: str, prefix: str) -> str:
        """A dataset key from a folder or file name (``prefix_`` in front when it starts with no letter)."""
        from cbir_pg.datasets.harmonise import normalise_part

        key = normalise_part(name).replace("-", "_")
        return key if key[:1].isalpha() else f"{prefix}_{key}"

    def fractions_option(self) -> tuple[float, float, float]:
        """The ``fractions`` option (train,val,test of a seeded split), else the default 0.7,0.1,0.2."""
        from cbir_pg.datasets.splits import DEFAULT_FRACTIONS, parse_fractions

        text = self.options.get("fractions")
        return parse_fractions(text) if text else DEFAULT_FRACTIONS

    def image_root(self) -> Path:
        """The folder ``image.uri`` is relative to (``cbir.dataset.root``)."""
        return self.root

    def total(self) -> int | None:
        """Number of records, when cheap to know (for the progress bar)."""
        return None

    def records(self) -> Iterator[Record | RowError]:
        raise NotImplementedError

    def default_label(self, source_label: str) -> str | None:
        """Harmonised key for a source label; ``None`` drops it; :class:`UnknownLabel` when unknown."""
        from cbir_pg.datasets.harmonise import normalise_key

        try:
            return normalise_key(source_label)
        except InputError as exc:
            raise UnknownLabel(str(exc)) from None


#: adapter classes by kind; the adapter modules register themselves, ``cbir_pg/datasets/__init__.py``
#: imports them (see :mod:`cbir_pg.registry`)
ADAPTERS: Registry[type[Adapter]] = Registry("dataset kind", error=ConfigError)


def register_adapter(kind: str) -> Callable[[type[Adapter]], type[Adapter]]:
    def deco(cls: type[Adapter]) -> type[Adapter]:
        cls.kind = kind
        return ADAPTERS.add(kind, cls, replace_same=True)

    return deco


# ----------------------------------------------------------------------------- small readers
def open_text(path: Path) -> io.TextIOBase:
    """Open a text file, transparently gunzipping ``.gz`` (MIMIC ships ``.csv.gz``)."""
    if str(path).endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def read_csv(path: Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Stream ``(line number, row)``; a missing required column is a :class:`ConfigError`."""
    with open_text(path) as fh:
        try:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            missing = [c for c in required if c not in cols]
            if missing:
                raise ConfigError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(cols)})")
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not UTF-8 text (undecodable byte at offset {exc.start}); save the file as UTF-8"
            ) from None


def find_file(root: Path, *names: str) -> Path:
    for name in names:
        for cand in (root / name, root / f"{name}.gz"):
            if cand.is_file():
                return cand
    raise ConfigError(f"{root}: none of {', '.join(names)} found")


def parse_sex(value: str | None) -> str | None:
    v = (value or "").strip().upper()
    if v in ("F", "FEMALE", "W"):
        return "F"
    if v in ("M", "MALE"):
        return "M"
    if v in ("O", "OTHER"):
        return "O"
    return None


def parse_age(value: str | None) -> float | None:
    """Age in years from ``58``, ``58.0`` or a DICOM age string ``058Y`` / ``006M`` / ``010D``."""
    v = (value or "").strip().upper()
    if not v:
        return None
    unit = 1.0
    if v[-1] in "YMWD":
        unit = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}[v[-1]]
        v = v[:-1]
    try:
        age = float(v) * unit
    except ValueError:
        return None
    return age if 0 <= age < 150 else None
