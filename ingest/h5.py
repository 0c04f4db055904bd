"""``cbir-pg embeddings import-h5``: load the paper's published embeddings into a model's table.

The authors published their vectors (Zenodo record 11196400) as one HDF5 file per model and dataset,
written by ``src/embeddings/create_embeddings.py``: for every image, ``h5f.create_dataset(path, data=v)``
where ``path`` is the image's ``filepath`` from the split CSVs (so ``CheXpert-v1.0/train/patient1/...``
becomes nested groups) and ``v`` is the model's embedding divided by its L2 norm (float32, 1-d).

:func:`import_h5` walks every ``*.h5`` / ``*.hdf5`` file under a folder (or one file), maps each
dataset's path to the image of a ``dkfz-splits`` import with that ``uri``, checks the dimension
against the model's config and the norm against 1, and writes the vectors with binary COPY into
``cbir.embedding_<key>`` (a re-import of the same images replaces them). The whole command is one
transaction: a run that fails on any file (a wrong dimension, unknown paths, a bad value) changes
nothing, not even the encoder row or the table. Each dataset's shape, dtype and chunk size are checked
from its header before it is read, so a small compressed file cannot decode to gigabytes.

**Never mixed.** Imported vectors are not the vectors this project computes: the encoder row gets the
config :func:`imported_config` (the registered config with ``weights_source = import:h5:...``), whose hash
differs. So ``ingest`` refuses to add computed vectors to an imported table and ``import-h5`` refuses a
table of computed vectors, each with the usual one-line error. Every imported file's name, sha256 and
vector count is appended to ``cbir.encoder.config -> 'imported_files'``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cbir_pg.db import identifiers, queries
from cbir_pg.db.database import Database
from cbir_pg.encoders import get_config
from cbir_pg.encoders.config import EncoderConfig, imported_config
from cbir_pg.errors import ConfigError, InputError, NotFoundError

#: largest allowed | ||v|| - 1 | of a published vector (they were normalised in float32)
NORM_TOLERANCE = 1e-3
SUFFIXES = (".h5", ".hdf5")


@dataclass
class FileReport:
    file: str
    sha256: str
    vectors: int  # datasets in the file
    loaded: int  # vectors written
    unmatched: int  # keys with no image in a dkfz-splits import
    examples_unmatched: list[str] = field(default_factory=list)


@dataclass
class ImportH5Summary:
    model: str
    config_hash: str
    files: list[FileReport]

    @property
    def loaded(self) -> int:
        return sum(f.loaded for f in self.files)

    @property
    def unmatched(self) -> int:
        return sum(f.unmatched for f in self.files)


def h5_files(path: str | Path) -> list[Path]:
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ConfigError(f"import-h5: {p} does not exist")
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
    if not files:
        raise ConfigError(f"import-h5: no .h5 / .hdf5 file under {p}")
    return files


#: largest chunk (bytes) a dataset may be stored in: reading one element decompresses its whole chunk
MAX_CHUNK_BYTES = 16 * 1024 * 1024


def read_h5(path: Path, dim: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """``(filepath, vector)`` for every dataset in the file, in the file's order (groups nest the path).

    Each dataset is checked from its header before it is read: a numeric dtype, a 1-d shape of ``dim``
    values (when given), and a chunk no larger than :data:`MAX_CHUNK_BYTES`; anything else is a
    one-line :class:`InputError` naming the dataset."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path.name}: not an HDF5 file ({str(exc).splitlines()[0]})") from None
    with f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in names:
            ds = f[name]
            if ds.dtype.kind not in "fiu":
                raise InputError(f"{path.name}: {name!r} holds {ds.dtype} values, not numbers")
            if dim is not None and tuple(ds.shape) != (dim,):
                raise InputError(
                    f"{path.name}: {name!r} has shape {tuple(ds.shape)}, the model's dimension is {dim}"
                )
            chunk = int(np.prod(ds.chunks, dtype=np.int64)) * ds.dtype.itemsize if ds.chunks else 0
            if chunk > MAX_CHUNK_BYTES:
                raise InputError(
                    f"{path.name}: {name!r} is stored in chunks of {chunk} bytes (limit {MAX_CHUNK_BYTES})"
                )
            try:
                yield name, np.asarray(ds[()], dtype=np.float32)
            except (OSError, ValueError, TypeError) as exc:
                raise InputError(
                    f"{path.name}: {name!r} cannot be read ({str(exc).splitlines()[0]})"
                ) from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_vectors(name: str, keys: Sequence[str], vectors: np.ndarray, dim: int) -> None:
    """One-line :class:`InputError` on a wrong dimension, a non-finite value or a norm far from 1."""
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        bad = next((k for k, v in zip(keys, vectors, strict=False) if v.shape != (dim,)), keys[0])
        raise InputError(
            f"{name}: {bad!r} has shape {tuple(np.shape(vectors[0]))}, the model's dimension is {dim}"
        )
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite)
        i = int(bad_rows[0])
        what = "NaN" if np.isnan(vectors[i]).any() else "infinite values"
        raise InputError(
            f"{name}: {bad_rows.size} vectors hold NaN or infinite values (first: {keys[i]!r}, {what})"
        )
    norms = np.linalg.norm(vectors, axis=1)
    bad_rows = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if bad_rows.size:
        i = int(bad_rows[0])
        raise InputError(
            f"{name}: {bad_rows.size} vectors are not unit length (first: {keys[i]!r}, norm {norms[i]:.6g});"
            " the published files hold L2-normalised vectors"
        )


def _file_vectors(f: Path, dim: int) -> tuple[list[str], np.ndarray]:
    """One file's keys and its vectors as one checked ``(n, dim)`` array."""
    keys, vecs = [], []
    for k, v in read_h5(f, dim):
        keys.append(k)
        vecs.append(v)
    if not keys:
        raise InputError(f"{f.name}: no datasets in the file")
    try:
        vectors = np.stack(vecs)
    except ValueError:
        bad = next(k for k, v in zip(keys, vecs, strict=True) if v.shape != (dim,))
        raise InputError(
            f"{f.name}: {bad!r} has shape {vecs[keys.index(bad)].shape}, the model's dimension is {dim}"
        ) from None
    check_vectors(f.name, keys, vectors, dim)
    return keys, vectors


def _images_by_uri(conn, f: Path, keys: list[str], datasets: Sequence[str] | None) -> dict[str, int]:
    """The image id of each key that is the filepath of an image (one import's, else an error)."""
    rows = conn.execute(
        queries.get("ingest", "h5_images_by_uri"),
        {"datasets": list(datasets) if datasets else None, "uris": keys},
    ).fetchall()
    by_uri: dict[str, int] = {}
    for r in rows:
        image_id, uri = r["id"], r["uri"]
        if uri in by_uri and by_uri[uri] != image_id:
            raise ConfigError(f"{f.name}: {uri!r} is an image of several dkfz-splits imports; pass --dataset")
        by_uri[uri] = int(image_id)
    return by_uri


def _load_file(conn, f: Path, model: str, config: EncoderConfig, datasets, batch_size: int) -> FileReport:
    """Replace the vectors of the file's matched images and record the file with the model."""
    from cbir_pg.ingest.copy import copy_vectors

    keys, vectors = _file_vectors(f, config.dim)
    by_uri = _images_by_uri(conn, f, keys, datasets)
    pos = [i for i, k in enumerate(keys) if k in by_uri]
    unmatched = [k for k in keys if k not in by_uri]
    ids = [by_uri[keys[i]] for i in pos]
    sha = sha256_file(f)
    table = identifiers.embedding_table(model)
    vtype = identifiers.vector_type_for(config.dim)
    conn.execute(queries.get("ingest", "h5_delete_vectors", table=table), {"ids": ids})
    for start in range(0, len(ids), batch_size):
        sel = pos[start : start + batch_size]
        copy_vectors(conn, model, ids[start : start + batch_size], vectors[sel], vtype)
    record = {
        "file": f.name,
        "sha256": sha,
        "vectors": len(keys),
        "loaded": len(ids),
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    conn.execute(queries.get("ingest", "h5_mark_imported"), {"key": model, "file": json.dumps([record])})
    return FileReport(f.name, sha, len(keys), len(ids), len(unmatched), unmatched[:3])


def import_h5(
    db: Database,
    path: str | Path,
    model: str,
    *,
    datasets: Sequence[str] | None = None,
    batch_size: int = 20_000,
) -> ImportH5Summary:
    """Import every HDF5 file under ``path`` as vectors of ``model`` (see the module docstring)."""
    from cbir_pg.ingest.worker import ensure_encoder_table

    config = imported_config(get_config(model))
    files = h5_files(path)
    reports: list[FileReport] = []
    try:
        with db.connection() as conn:  # one transaction: a failure anywhere changes nothing
            # refuses a table of vectors computed under another config; created (if new) in this transaction
            ensure_encoder_table(conn, config, commit=False)
            reports = [_load_file(conn, f, model, config, datasets, batch_size) for f in files]
            if not any(r.loaded for r in reports):  # inside the transaction: rolled back with the rest
                raise NotFoundError(
                    f"none of the {sum(r.vectors for r in reports)} HDF5 keys is the filepath of an image of a"
                    " dkfz-splits import (cbir-pg datasets import dkfz-splits CSV --option images=DIR);"
                    " nothing was imported"
                )
    except (InputError, ConfigError) as exc:
        if len(files) < 2:
            raise
        raise type(exc)(
            f"{exc}; nothing was imported from the {len(files)} files (import-h5 is one transaction)"
        ) from None
    return ImportH5Summary(model=model, config_hash=config.config_hash(), files=reports)
