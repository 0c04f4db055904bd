"""``import_dataset``: stream an adapter's records, decode each new image once, COPY in batches.

Per batch: records whose ``uri`` is already in the dataset are skipped (so a re-import adds nothing
and decodes nothing), labels are mapped (label-map file, then the dataset's ``label_map`` rows, then
the adapter's default), each new image is decoded once through :func:`cbir_pg.images.decode_file`
for its size, pixel hash and perceptual hash, and the batch is bulk-loaded
(:class:`cbir_pg.datasets.loader.BulkLoader`). Bad rows go to ``cbir.error`` (stage ``import``) and
the import goes on. At the end duplicates are flagged (:mod:`cbir_pg.datasets.dedupe`).

An advisory lock per dataset key serialises two imports of the same dataset; imports of different
datasets run at the same time. Labels and label-map rows are written on a separate autocommit
connection, so two imports that create the same label never deadlock.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbir_pg.datasets.base import Adapter, Record, RowError, UnknownLabel, printable
from cbir_pg.datasets.harmonise import LabelMapFile, load_label_map, parse_label_key
from cbir_pg.datasets.loader import BulkLoader, StageRow, ensure_label, q
from cbir_pg.datasets.splits import (
    DEFAULT_FRACTIONS,
    SPLITS,
    TRAINVAL_FRACTIONS,
    assign_split,
    hash_patient_id,
)
from cbir_pg.db.database import Database, scalar, wrap_db_errors
from cbir_pg.errors import ConfigError
from cbir_pg.progress import progress_bar, track

#: logger ``cbir_pg.datasets.importer``: start and end of each import (``CBIR_PG_LOG_LEVEL=INFO``)
log = logging.getLogger(__name__)

BATCH_SIZE = 500


@dataclass
class ImportSummary:
    dataset: str
    dataset_id: int
    kind: str
    root: str
    rows: int = 0
    imported: int = 0
    skipped_existing: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    exact_duplicates: int = 0
    near_duplicates: int = 0
    images: int = 0
    patients: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    patients_crossing_splits: int = 0
    hashed: bool = True
    seconds: float = 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


_UNKNOWN = object()


class LabelResolver:
    """Source label → harmonised label id (``None``: dropped), writing labels and ``label_map`` rows."""

    def __init__(self, aconn, dataset_id: int, adapter: Adapter, mapfile: LabelMapFile | None):
        self.conn = aconn
        self.dataset_id = dataset_id
        self.adapter = adapter
        self.file = mapfile or LabelMapFile()
        rows = aconn.execute(q("label_map_rows"), {"dataset_id": dataset_id}).fetchall()
        self.db_map: dict[str, str | None] = {r["source_label"]: r["key"] for r in rows}
        self.cache: dict[str, Any] = {}
        self.ids: dict[str, int] = {}
        for key, kind in self.file.kinds.items():
            self.label_id(key)
            aconn.execute(q("override_label_kind"), {"key": key, "kind": kind})

    def label_id(self, key: str) -> int:
        if key not in self.ids:
            self.ids[key] = ensure_label(self.conn, key, self.file.kinds.get(parse_label_key(key).key))
        return self.ids[key]

    def resolve(self, source: str) -> int | None:
        hit = self.cache.get(source, _UNKNOWN)
        if isinstance(hit, UnknownLabel):
            raise hit
        if hit is not _UNKNOWN:
            return hit
        try:
            if source in self.file.entries:
                key, stmt = self.file.entries[source], "upsert_label_map"
            elif source in self.db_map:
                key, stmt = self.db_map[source], None
            else:
                key, stmt = self.adapter.default_label(source), "insert_label_map"
                key = parse_label_key(key).key if key else None
        except UnknownLabel as exc:
            self.cache[source] = exc
            raise
        except Exception as exc:  # a malformed default key is an unknown label too
            err = UnknownLabel(str(exc))
            self.cache[source] = err
            raise err from None
        label_id = self.label_id(key) if key else None
        if stmt:
            self.conn.execute(
                q(stmt), {"dataset_id": self.dataset_id, "source_label": source, "label_id": label_id}
            )
        self.cache[source] = label_id
        return label_id


def _options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None and v != ""}


@wrap_db_errors
def import_dataset(
    db: Database,
    kind: str,
    root: str | Path,
    *,
    name: str | None = None,
    label_map: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    hash_images: bool = True,
    batch_size: int = BATCH_SIZE,
    allow_outside_root: bool = False,
    profile: str = "default",
    dedupe: str | None = None,
    metadata_only: bool = False,
    **options: Any,
) -> ImportSummary:
    """Import one dataset (see the module docstring); safe to run again, it adds nothing twice.

    ``kind`` is an adapter key (:func:`cbir_pg.datasets.list_adapters`); ``options`` are the adapter's
    own (e.g. ``flag`` for medmnist, ``uncertain`` for chexpert). ``hash_images=False`` skips decoding
    (no size, pixel hash or dedupe): for very large imports. ``profile`` (:mod:`cbir_pg.profiles`) fills
    in the adapter options and the ``dedupe`` mode (``near``, ``exact`` or ``none``) it prescribes where
    they are not given; both are recorded in ``cbir.dataset.params``. A row whose path is absolute or
    leaves the dataset root (``../``) is a recorded ``outside_root`` error unless ``allow_outside_root``.

    The dataset is marked ``import_status = 'importing'`` (and ``imported_at`` null) until the run
    finishes; evaluation refuses a dataset in that state (a killed import leaves it so until a rerun
    completes).

    ``metadata_only`` (adapters with ``metadata_only = True``, i.e. ``dkfz-splits``): no file is opened
    or even looked for; labels, splits and patients come from the source's tables alone, and every image
    this run imports is marked ``local_pixels = false`` (search, the page and the report then say "pixels
    not available"). P@N needs only labels, splits and vectors (e.g. the published HDF5 files).
    """

    started = time.monotonic()
    setup = _setup(kind, root, name, label_map, profile, dedupe, metadata_only, options)
    settings = _Settings(
        setup.image_root, seed, hash_images and not metadata_only, allow_outside_root, metadata_only
    )
    log.info("import start dataset=%s kind=%s root=%s", setup.key, setup.adapter.kind, setup.root)
    summary = _locked_import(db, setup, settings, batch_size=batch_size, progress=progress)
    summary.seconds = time.monotonic() - started
    log.info(
        "import done dataset=%s kind=%s imported=%d errors=%d seconds=%.1f",
        setup.key,
        setup.adapter.kind,
        summary.imported,
        summary.error_count,
        summary.seconds,
    )
    return summary


def _locked_import(db: Database, setup: _Setup, settings: _Settings, *, batch_size: int, progress: bool):
    """:func:`_import` under the dataset key's advisory lock (two imports of one dataset wait for each
    other), with the loading connection and the autocommit one for labels and errors."""
    from cbir_pg.db.locks import key_of, wait_for_lock

    key = setup.key
    lock_conn = db.connect(autocommit=True, vector=False)
    conn = db.connect(vector=False)
    aconn = db.connect(autocommit=True, vector=False)
    try:
        wait_for_lock(lock_conn, key_of(lock_conn, "dataset_key", key), f"datasets import {key}")
        return _import(conn, aconn, setup, settings, batch_size=batch_size, progress=progress)
    finally:
        with contextlib.suppress(Exception):
            lock_conn.execute(q("unlock_dataset"), {"key": key})  # a no-op unless it was taken
        for c in (conn, aconn, lock_conn):
            c.close()


@dataclass(frozen=True)
class _Settings:
    """How one run turns records into rows: where the files are, the split seed, whether files are
    decoded and hashed, whether paths may leave the root, and whether files are looked at at all."""

    image_root: Path
    seed: int
    hash_images: bool
    allow_outside_root: bool
    metadata_only: bool


@dataclass(frozen=True)
class _Setup:
    """The adapter of one import, its dataset key and root, the label-map file and the profile's choices."""

    adapter: Adapter
    key: str
    root: Path
    image_root: Path
    mapfile: LabelMapFile | None
    label_map: str | None
    profile: str
    dedupe: str
    options: dict[str, Any]

    def params(self, s: _Settings) -> dict[str, Any]:
        """What ``cbir.dataset.params`` records about the import."""
        return {
            "seed": s.seed,
            "options": {k: str(v) for k, v in self.options.items()},
            "hash": s.hash_images,
            "profile": self.profile,
            "dedupe": self.dedupe,
            "label_map": self.label_map,
            # a managed copy keeps no source path (the folder names may be patients')
            "source_root": None if getattr(self.adapter, "managed", False) else str(self.root),
            "allow_outside_root": s.allow_outside_root,
            "metadata_only": s.metadata_only,
        }


def _setup(kind: str, root, name, label_map, profile: str, dedupe, metadata_only: bool, options) -> _Setup:
    """The adapter for ``kind`` with the profile's options filled in, and the dataset key; clear errors
    for an unknown kind or key, or ``metadata_only`` on a source that needs the images."""
    from cbir_pg.datasets.base import ADAPTERS  # populated by the package __init__
    from cbir_pg.db.identifiers import check_key
    from cbir_pg.profiles import adapter_options, check_dedupe, get_profile

    cls = ADAPTERS.get(kind)
    if metadata_only and not cls.metadata_only:
        raise ConfigError(
            f"{cls.kind}: --metadata-only needs a source whose tables carry labels and splits without"
            " the images (dkfz-splits)"
        )
    prof = get_profile(profile)
    dedupe_mode = check_dedupe(dedupe or prof.dedupe)
    options = adapter_options(prof, cls.kind, _options(options))
    root = cls.resolve_root(root)
    key = check_key(name or cls.default_key(root, options), "dataset")
    adapter = cls(root, key, options)
    mapfile = load_label_map(label_map) if label_map else None
    image_root = adapter.image_root().expanduser().resolve()
    label_map = str(label_map) if label_map else None
    return _Setup(adapter, key, root, image_root, mapfile, label_map, prof.name, dedupe_mode, options)


def _import(
    conn, aconn, setup: _Setup, settings: _Settings, *, batch_size: int, progress: bool
) -> ImportSummary:
    """Under the dataset's lock: open its row, load the records in batches, flag duplicates, mark it
    finished and count what it holds."""
    adapter, key = setup.adapter, setup.key
    dataset_id = _open_dataset(aconn, adapter, key, settings.image_root, setup.params(settings))
    since = scalar(aconn, q("now"))
    salt = _salt(aconn, dataset_id) if adapter.identifying_ids else ""
    adapter.salt = salt
    if adapter.wants_known:
        adapter.known = {r["uri"] for r in aconn.execute(q("dataset_uris"), {"dataset_id": dataset_id})}
    summary = ImportSummary(
        dataset=key,
        dataset_id=dataset_id,
        kind=adapter.kind,
        root=str(settings.image_root),
        hashed=settings.hash_images,
    )
    labels = LabelResolver(aconn, dataset_id, adapter, setup.mapfile)
    run = _Run(adapter, summary, labels, BulkLoader(conn, dataset_id), aconn, settings, salt, since)
    bar = progress_bar(adapter.total(), f"import {key}", unit="img", enabled=progress)
    try:
        _load_records(run, track(adapter.records(), bar), batch_size)
    finally:
        bar.close()
    run.write_errors()
    if settings.metadata_only:
        aconn.execute(q("mark_no_local_pixels"), {"dataset_id": dataset_id, "since": since})

    from cbir_pg.datasets.dedupe import mark_duplicates

    dd = mark_duplicates(conn, dataset_id, near=adapter.near_dedupe, mode=setup.dedupe)
    summary.exact_duplicates, summary.near_duplicates = dd.exact, dd.near
    aconn.execute(q("finish_dataset"), {"dataset_id": dataset_id})
    _fill_counts(aconn, summary)
    return summary


def _salt(aconn, dataset_id: int) -> str:
    """The salt for hashing identifying ids: from ``CBIR_PG_SALT`` / ``CBIR_PG_SALT_FILE`` when set (kept
    out of the database, so a dump cannot be brute-forced), else ``cbir.installation``. Only the source
    is recorded (``dataset.params.salt_source``), never the salt."""
    import json

    from cbir_pg.datasets.splits import external_salt

    ext = external_salt()
    source = "external" if ext else "database"
    aconn.execute(
        q("update_dataset_params"),
        {"dataset_id": dataset_id, "params": json.dumps({"salt_source": source})},
    )
    return ext[0] if ext else scalar(aconn, q("patient_salt"))


def _open_dataset(aconn, adapter: Adapter, key: str, image_root: Path, params: dict[str, Any]) -> int:
    """The dataset's row (created on the first import; a clash of kinds is an error), its root and
    parameters updated, the errors of the previous import cleared. Returns its id."""
    import json

    row = aconn.execute(q("get_dataset"), {"key": key}).fetchone()
    if row and row["kind"] != adapter.kind:
        raise ConfigError(
            f"dataset {key!r} exists with kind {row['kind']!r}, not {adapter.kind!r}; pass another --name"
        )
    if row is None:
        aconn.execute(
            q("insert_dataset"),
            {
                "key": key,
                "kind": adapter.kind,
                "name": adapter.title or key,
                "source": adapter.source_url,
                "licence": adapter.licence,
                "citation": adapter.citation,
                "root": str(image_root),
                "params": json.dumps(params),
            },
        )
        row = aconn.execute(q("get_dataset"), {"key": key}).fetchone()
    dataset_id = row["id"]
    aconn.execute(
        q("update_dataset"), {"dataset_id": dataset_id, "root": str(image_root), "params": json.dumps(params)}
    )
    if not adapter.incremental:
        aconn.execute(q("clear_import_errors"), {"dataset_id": dataset_id})
    return dataset_id


def _load_records(run: _Run, items, batch_size: int) -> None:
    """Stream the adapter's records into the run in batches; bad rows become import errors."""
    pending: list[Record] = []
    for item in items:
        run.summary.rows += 1
        if isinstance(item, RowError):
            run.error(item.source, item.reason, item.message)
            continue
        problem = item.problem() or run.path_problem(item.uri)
        if problem:
            run.error(item.uri, *problem)
            continue
        pending.append(item)
        if len(pending) >= batch_size:
            run.flush(pending)
            pending = []
    run.flush(pending)


def _fill_counts(aconn, s: ImportSummary) -> None:
    p = {"dataset_id": s.dataset_id}
    counts = aconn.execute(q("dataset_counts"), p).fetchone()
    s.images, s.patients = counts["images"], counts["patients"]

    def by(query: str, name: str) -> dict[str, int]:
        rows = aconn.execute(q(query)).fetchall()
        return {r[name]: int(r["images"]) for r in rows if r["dataset_id"] == s.dataset_id}

    s.splits = by("dataset_split_counts", "split")
    s.labels = by("dataset_label_counts", "label")
    s.excluded = by("dataset_exclusion_counts", "exclusion_reason")
    s.patients_crossing_splits = int(scalar(aconn, q("patients_crossing_splits"), p))


class _Run:
    """The state of one import run: turns records into stage rows, batch by batch."""

    def __init__(self, adapter, summary, labels, loader, aconn, settings: _Settings, salt: str, since):
        self.adapter, self.summary, self.labels, self.loader = adapter, summary, labels, loader
        self.aconn, self.salt, self.since = aconn, salt, since
        self.image_root, self.seed = settings.image_root, settings.seed
        self.hash_images = settings.hash_images
        self.allow_outside_root = settings.allow_outside_root
        self.metadata_only = settings.metadata_only
        self.errors: list[dict[str, Any]] = []

    def error(self, source: str, reason: str, message: str) -> None:
        """Record one row's error; source and message are escaped (file names in another encoding,
        control characters) and cut, so recording an error can never fail itself."""
        self.summary.errors[reason] = self.summary.errors.get(reason, 0) + 1
        self.errors.append(
            {
                "dataset_id": self.summary.dataset_id,
                "source": printable(source, 300),
                "reason": reason,
                "message": printable(message, 2000),
            }
        )
        if len(self.errors) >= 1000:
            self.write_errors()

    def write_errors(self) -> None:
        if self.errors:
            with self.aconn.cursor() as cur:
                cur.executemany(q("insert_error"), self.errors)
            self.errors = []

    def path_problem(self, uri: str) -> tuple[str, str] | None:
        """``('outside_root', message)`` for an absolute path, one that leaves the dataset root with
        ``..``, or one whose symlinks lead out of it, unless the import allows it. The path is resolved
        (every symlink followed) and compared with the resolved root, so a dataset folder that is itself
        a symlink still works but a link inside it to ``/etc/...`` does not."""
        import os
        import posixpath

        if self.allow_outside_root:
            return None
        norm = posixpath.normpath(uri.replace("\\", "/"))
        how = None
        if posixpath.isabs(norm) or norm == ".." or norm.startswith("../") or uri[1:3] in (":/", ":\\"):
            how = "the path is outside the dataset root"
        else:
            root = os.path.realpath(self.image_root)
            try:
                real = os.path.realpath(os.path.join(root, norm))
            except (OSError, ValueError):
                real = ""
            if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
                how = "the path is a symlink that leads outside the dataset root"
        if how:
            return (
                "outside_root",
                f"{printable(uri)}: {how} {self.image_root} (pass --allow-outside-root to import it anyway)",
            )
        return None

    def split_of(self, rec: Record) -> str:
        if rec.split in SPLITS:
            return rec.split  # type: ignore[return-value]
        key = rec.patient or rec.uri
        if rec.split == "trainval":
            return assign_split(key, self.seed, TRAINVAL_FRACTIONS)
        return assign_split(key, self.seed, self.adapter.fractions or DEFAULT_FRACTIONS)

    def private(self, value: str | None) -> str | None:
        if value is None or not self.adapter.identifying_ids:
            return value
        return hash_patient_id(value, self.salt)

    def flush(self, records: list[Record]) -> None:
        if not records:
            return
        batch: dict[str, Record] = {}
        for rec in records:
            if rec.uri in batch:
                self.error(rec.uri, "duplicate_path", f"{rec.uri} appears more than once in the source")
            else:
                batch[rec.uri] = rec
        existing = self.loader.existing(list(batch), self.since)
        rows: list[StageRow] = []
        for uri, rec in batch.items():
            if uri in existing:
                if existing[uri]:
                    self.error(uri, "duplicate_path", f"{uri} appears more than once in the source")
                else:
                    self.summary.skipped_existing += 1
                continue
            row = self.stage_row(rec)
            if row is not None:
                rows.append(row)
        self.summary.imported += self.loader.load(rows)

    def read_file(self, rec: Record, row: StageRow) -> bool:
        """Fill ``row``'s size, hashes and dimensions from the file; record the error and return
        ``False`` when it cannot be read."""
        from cbir_pg.images import DecodeError, decode_file, perceptual_hash, pixel_hash, stat_regular_file

        path = self.image_root / rec.uri
        try:
            if rec.write is not None:
                rec.write()
            if self.hash_images:
                rgb = rec.pixels if rec.pixels is not None else decode_file(path)
                row.content_hash, row.phash = pixel_hash(rgb), perceptual_hash(rgb)
                row.height, row.width = int(rgb.shape[0]), int(rgb.shape[1])
            elif rec.pixels is not None:
                row.height, row.width = int(rec.pixels.shape[0]), int(rec.pixels.shape[1])
            row.size_bytes = stat_regular_file(path).st_size
        except DecodeError as exc:
            self.error(rec.uri, exc.reason, str(exc))
            return False
        except OSError as exc:
            self.error(rec.uri, "unreadable_file", f"{path}: {exc.strerror or exc}")
            return False
        return True

    def stage_row(self, rec: Record) -> StageRow | None:
        try:
            ids = [self.labels.resolve(s) for s in rec.labels]
        except UnknownLabel as exc:
            self.error(rec.uri, "unknown_label", f"{rec.uri}: unknown label: {exc}")
            return None
        label_ids = sorted({i for i in ids if i is not None})
        row = StageRow(uri=rec.uri)
        if not self.metadata_only and not self.read_file(rec, row):  # metadata-only: no file looked for
            return None
        reason = rec.exclusion
        if reason is None and len(label_ids) > 1 and self.adapter.single_label:
            reason = "multi_label"
        elif reason is None and not label_ids and self.adapter.require_label:
            reason = "no_label"
        extra = dict(rec.extra)
        if "series" in extra:
            extra["series"] = self.private(str(extra["series"]))
        if rec.age is not None:
            extra["age"] = round(float(rec.age), 2)
        row.patient_key = self.private(rec.patient)
        row.sex, row.age = rec.sex, rec.age
        row.study_key = self.private(rec.study)
        row.modality, row.body_region, row.view = rec.modality, rec.region, rec.view
        row.split = self.split_of(rec)
        row.label_ids = label_ids
        row.label_id = label_ids[0] if len(label_ids) == 1 else None
        row.source_labels = {"labels": list(rec.labels)}
        row.excluded, row.exclusion_reason = reason is not None, reason
        row.extra = extra
        return row
