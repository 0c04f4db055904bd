"""Helpers shared by the reliability tests: the bad-input catalogue, database scans and snapshots, and
the fault-worker subprocesses killed on purpose.

Plain functions (no fixtures) so both the tests and their subprocesses can import them.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

# --------------------------------------------------------------------------- DSNs


def dsn_with(dsn: str, **overrides: str) -> str:
    """The same DSN with some libpq parameters replaced (``user=``, ``password=``, ``dbname=``)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params.update(overrides)
    return make_conninfo(**params)


def dbname_of(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(dsn)["dbname"])


# --------------------------------------------------------------------------- database scans


def text_columns(
    conn: psycopg.Connection, schemas: tuple[str, ...] = ("cbir",)
) -> list[tuple[str, str, str, str]]:
    """Every text-like or json column of every base table in ``schemas``: (schema, table, column, type)."""
    rows = conn.execute(
        """
        select c.table_schema, c.table_name, c.column_name, c.data_type
        from information_schema.columns c
        join information_schema.tables t using (table_schema, table_name)
        where c.table_schema = any(%s) and t.table_type = 'BASE TABLE'
          and (c.data_type in ('text', 'character varying', 'character', 'json', 'jsonb', 'ARRAY', 'USER-DEFINED'))
        order by 1, 2, 3
        """,
        (list(schemas),),
    ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def find_values(
    dsn: str, needles: list[str], schemas: tuple[str, ...] = ("cbir",), ignore_case: bool = False
) -> list[tuple[str, str, str]]:
    """Where any of ``needles`` occurs (as a substring) in any text/json/array column: a list of
    (table, column, needle). Empty means the values are stored nowhere."""
    hits: list[tuple[str, str, str]] = []
    needles = [n for n in needles if n]
    with psycopg.connect(dsn) as conn:
        for schema, table, column, _ in text_columns(conn, schemas):
            for needle in needles:
                fmt = (
                    "select count(*) from {} where strpos(lower({}::text), lower(%s)) > 0"
                    if ignore_case
                    else ("select count(*) from {} where strpos({}::text, %s) > 0")
                )
                q = sql.SQL(fmt).format(sql.Identifier(schema, table), sql.Identifier(column))
                if conn.execute(q, (needle,)).fetchone()[0]:
                    hits.append((f"{schema}.{table}", column, needle))
    return hits


def relation_snapshot(dsn: str) -> list[tuple[str, str, str]]:
    """Every relation, function and role visible from ``dsn`` outside the system catalogs: a before/after
    comparison shows whether a statement had any DDL side effect."""
    with psycopg.connect(dsn) as conn:
        rels = conn.execute(
            """
            select n.nspname, c.relname, c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast') and n.nspname not like 'pg_temp%%'
              and n.nspname not like 'pg_toast_temp%%'
            union all
            select n.nspname, p.proname, 'f' from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname not in ('pg_catalog', 'information_schema')
            union all
            select 'schema', nspname, 's' from pg_namespace
            order by 1, 2, 3
            """
        ).fetchall()
    return [tuple(r) for r in rels]  # type: ignore[misc]


def row_counts(dsn: str, schema: str = "cbir") -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "select table_name from information_schema.tables where table_schema = %s and table_type = 'BASE TABLE'",
                (schema,),
            )
        ]
        return {
            t: conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, t))).fetchone()[
                0
            ]
            for t in sorted(tables)
        }


# Columns that differ between two otherwise identical imports: serial ids, timestamps.
_VOLATILE = {"id", "created_at", "imported_at", "updated_at", "started_at", "finished_at"}


def seed_tiny_cnn_vectors(dsn: str, dataset: str, rows: int) -> None:
    """A complete dataset ``dataset`` of ``rows`` images, each with a random unit ``tiny_cnn`` vector
    (16-d, drawn by PostgreSQL)."""
    from cbir_pg.db.connect import connect
    from cbir_pg.encoders import get_config
    from cbir_pg.ingest.worker import ensure_encoder_table

    with connect(dsn) as conn:
        ensure_encoder_table(conn, get_config("tiny_cnn"))
        ds = conn.execute(
            "insert into cbir.dataset (key, kind, name, import_status, imported_at)"
            " values (%s, 'csv', %s, 'complete', now()) returning id",
            (dataset, dataset),
        ).fetchone()[0]
        conn.execute(
            "insert into cbir.image (dataset_id, uri, split) select %s, 'img_' || g || '.png', 'train'"
            " from generate_series(1, %s) g",
            (ds, rows),
        )
        conn.execute(
            "insert into cbir.embedding_tiny_cnn (image_id, embedding)"
            " select i.id, l2_normalize(array(select random() - 0.5 from generate_series(1, 16)"
            "   where i.id is not null)::vector) from cbir.image i"
        )
        conn.commit()


# --------------------------------------------------------------------------- fault-worker subprocesses
HERE = Path(__file__).resolve().parent
FAULT_WORKER = HERE / "fault_worker.py"


def spawn_fault_worker(*args: str) -> subprocess.Popen:
    """``tests/reliability/fault_worker.py ARGS`` (a real ingest or import, slowed where a kill should
    land) in a subprocess running this checkout's code on one thread, its output piped."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1]), str(HERE), env.get("PYTHONPATH", "")])
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    return subprocess.Popen(
        [sys.executable, str(FAULT_WORKER), *args],
        cwd=HERE.parents[1],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``pred()`` until it holds; the test fails after ``timeout`` seconds, or as soon as ``proc``
    (when given) exits first."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the worker exited (rc {proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def kill_when(proc: subprocess.Popen, ready, what: str) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` (waiting up to 180 s; it must still be running then), then
    collect it."""
    try:
        wait_for(ready, 180, what, proc)
        assert proc.poll() is None, f"the worker ended before it was killed ({what})"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@contextmanager
def own_embedded_server(prefix: str) -> Iterator[tuple[object, str]]:
    """A dedicated embedded server (so a test can stop or kill it) with one migrated database ``cbir``
    under a fresh folder in /tmp; yields (server, dsn); stopped and removed after."""
    import shutil
    import tempfile

    from cbir_pg.db.database import Database
    from cbir_pg.db.migrate import migrate
    from cbir_pg.db.server import EmbeddedServer

    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    server = EmbeddedServer(root / "pg")
    st = server.start()
    with psycopg.connect(st.uri("postgres"), autocommit=True) as c:
        c.execute("create database cbir")
    dsn = st.uri("cbir")
    migrate(Database(dsn))
    try:
        yield server, dsn
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def canonical_dump(
    dsn: str, schema: str = "cbir", skip_tables: tuple[str, ...] = ("installation",)
) -> dict[str, list]:
    """The content of every table of ``schema`` with serial ids replaced by natural keys where they are
    foreign keys (dataset_id -> dataset.key, image_id -> (dataset key, uri), label_id -> label.key,
    patient_id -> patient_key, study_id -> study_key) and volatile columns dropped; rows sorted.

    Two databases that hold the same data give equal dumps whatever order rows were inserted in."""
    out: dict[str, list] = {}
    with psycopg.connect(dsn) as conn:
        ds = {r[0]: r[1] for r in conn.execute("select id, key from cbir.dataset")}
        labels = {r[0]: r[1] for r in conn.execute("select id, key from cbir.label")}
        patients = {
            r[0]: (ds.get(r[1]), r[2])
            for r in conn.execute("select id, dataset_id, patient_key from cbir.patient")
        }
        studies = {
            r[0]: (ds.get(r[1]), r[2])
            for r in conn.execute("select id, dataset_id, study_key from cbir.study")
        }
        images = {
            r[0]: (ds.get(r[1]), r[2]) for r in conn.execute("select id, dataset_id, uri from cbir.image")
        }
        mapping = {
            "dataset_id": ds,
            "label_id": labels,
            "patient_id": patients,
            "study_id": studies,
            "image_id": images,
            "duplicate_of": images,
            "query_image_id": images,
        }
        tables = [
            r[0]
            for r in conn.execute(
                "select table_name from information_schema.tables where table_schema = %s and table_type = 'BASE TABLE'"
                " order by 1",
                (schema,),
            )
        ]
        for table in tables:
            if table in skip_tables:
                continue
            cur = conn.execute(sql.SQL("select * from {}").format(sql.Identifier(schema, table)))
            cols = [d.name for d in cur.description]
            rows = []
            for row in cur.fetchall():
                rec = []
                for col, val in zip(cols, row, strict=True):
                    if col in _VOLATILE:
                        continue
                    if col in mapping and val is not None:
                        val = mapping[col].get(val, ("?", val))
                    rec.append((col, repr(val)))
                rows.append(tuple(rec))
            out[table] = sorted(rows)
    return out


# --------------------------------------------------------------------------- the bad-input catalogue


def _png(im, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def _jpeg(im, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _tiff(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "TIFF")
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(side: int = 100_000) -> bytes:
    """A 200-byte PNG whose header claims side x side pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def grey(seed: int, side: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (side, side), dtype=np.uint8)


def good_png(seed: int, side: int = 32) -> bytes:
    from PIL import Image

    return _png(Image.fromarray(grey(seed, side)))


def jpip_dicom() -> bytes:
    """A real DICOM whose transfer syntax (JPIP Referenced) no decoder plugin can decode."""
    import io

    import pydicom

    ds = pydicom.dcmread(pydicom_file("MR_small_jpeg_ls_lossless.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.94"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def pydicom_file(name: str) -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files" / name


@dataclass(frozen=True)
class Bad:
    """One kind of bad input: a file name, its bytes (None: the file is missing), the expected reason."""

    kind: str
    name: str
    data: bytes | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Tricky:
    """A valid but unusual image and the RGB array it must decode to (``atol`` allows JPEG rounding)."""

    kind: str
    name: str
    data: bytes
    expected: np.ndarray
    atol: int = 0


def bad_image_files() -> list[Bad]:
    """The file-level bad inputs: each must be refused with a recorded reason naming the file."""
    from PIL import Image

    g = Image.fromarray(grey(1))
    png = _png(g)
    jpeg = _jpeg(g.convert("RGB"), quality=90)
    rng = np.random.default_rng(7)
    corrupt = png[:60] + b"\x00" * 24 + png[84:]  # a valid header, then a broken zlib stream
    garbage_after_header = png[:16] + rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    return [
        Bad("corrupt_png", "corrupt.png", corrupt, ("corrupt_image", "truncated_image")),
        Bad(
            "garbled_png",
            "garbled.png",
            garbage_after_header,
            ("corrupt_image", "not_an_image", "truncated_image"),
        ),
        Bad("truncated_jpeg", "truncated.jpg", jpeg[: len(jpeg) // 3], ("truncated_image", "corrupt_image")),
        Bad("empty_file", "empty.png", b"", ("empty_file",)),
        Bad("non_image", "notes.png", b"Patient notes, not an image.\n" * 20, ("not_an_image",)),
        Bad("decompression_bomb", "bomb.png", bomb_png(), ("decompression_bomb",)),
        Bad("tiny_1x1", "tiny.png", _png(Image.new("L", (1, 1), 128)), ("image_too_small",)),
        Bad("dicom_no_decoder_exists", "jpip.dcm", jpip_dicom(), ("dicom_unsupported_transfer_syntax",)),
        Bad(
            "dicom_segmentation",
            "seg.dcm",
            pydicom_file("liver_1frame.dcm").read_bytes(),
            ("dicom_not_an_image",),
        ),
        Bad("dicom_no_pixels", "nopix.dcm", pydicom_file("priv_SQ.dcm").read_bytes(), ("dicom_no_pixels",)),
        Bad("dicom_rt_plan", "rtplan.dcm", pydicom_file("rtplan.dcm").read_bytes(), ("dicom_not_an_image",)),
        Bad("missing_file", "missing.png", None, ("missing_file",)),
    ]


def _grey_16bit() -> list[Tricky]:
    """16-bit greyscale with a narrow range: min-max stretched to 0..255, order kept."""
    from PIL import Image

    a16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 3 + 1000).astype(np.uint16)
    exp16 = np.round((a16.astype(np.float64) - a16.min()) * 255.0 / (a16.max() - a16.min())).astype(np.uint8)
    return [
        Tricky("grey_16bit", "grey16.png", _png(Image.fromarray(a16)), np.repeat(exp16[:, :, None], 3, 2))
    ]


def _palette() -> list[Tricky]:
    """Palette: each pixel becomes its palette colour."""
    from PIL import Image

    idx = (np.arange(32 * 32).reshape(32, 32) % 4).astype(np.uint8)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255], [200, 200, 10]], dtype=np.uint8)
    pal = Image.frombytes("P", (32, 32), idx.tobytes())
    pal.putpalette(colours.flatten().tolist() + [0] * (768 - 12))
    return [Tricky("palette", "palette.png", _png(pal), colours[idx])]


def _rgba() -> list[Tricky]:
    """RGBA: composited on black (radiology backgrounds are black)."""
    from PIL import Image

    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[:8, :, 3] = 255  # top half opaque
    rgba[8:, :, 3] = 0  # bottom half transparent -> black
    exp = np.zeros((16, 16, 3), dtype=np.uint8)
    exp[:8] = (200, 100, 50)
    return [Tricky("rgba", "rgba.png", _png(Image.frombytes("RGBA", (16, 16), rgba.tobytes())), exp)]


def _cmyk() -> list[Tricky]:
    """CMYK as TIFF (lossless) and as JPEG (the form scanners produce, lossy): pure cyan, magenta,
    yellow, and 50 % black."""
    from PIL import Image

    cmyk = np.zeros((16, 16, 4), dtype=np.uint8)
    cmyk[:8, :8] = (255, 0, 0, 0)
    cmyk[:8, 8:] = (0, 255, 0, 0)
    cmyk[8:, :8] = (0, 0, 255, 0)
    cmyk[8:, 8:] = (0, 0, 0, 128)
    exp = np.zeros((16, 16, 3), dtype=np.uint8)
    exp[:8, :8] = (0, 255, 255)
    exp[:8, 8:] = (255, 0, 255)
    exp[8:, :8] = (255, 255, 0)
    exp[8:, 8:] = (127, 127, 127)
    image = Image.frombytes("CMYK", (16, 16), cmyk.tobytes())
    return [
        Tricky("cmyk", "cmyk.tif", _tiff(image), exp, atol=1),
        Tricky("cmyk_jpeg", "cmyk.jpg", _jpeg(image, quality=100), exp, atol=12),
    ]


def _grey_alpha() -> list[Tricky]:
    """Greyscale + alpha."""
    from PIL import Image

    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[..., 0] = 180
    la[:, :4, 1] = 255
    exp = np.zeros((8, 8, 3), dtype=np.uint8)
    exp[:, :4] = 180
    return [Tricky("grey_alpha", "la.png", _png(Image.frombytes("LA", (8, 8), la.tobytes())), exp)]


def _one_bit() -> list[Tricky]:
    """1-bit."""
    from PIL import Image

    bits = (np.indices((8, 8)).sum(0) % 2).astype(bool)
    exp1 = np.repeat((bits * 255).astype(np.uint8)[:, :, None], 3, 2)
    return [Tricky("one_bit", "bits.png", _png(Image.fromarray(bits)), exp1)]


def tricky_image_files() -> list[Tricky]:
    """Valid inputs in unusual modes: each must decode to the right RGB pixels, not to an error."""
    return [t for make in (_grey_16bit, _palette, _rgba, _cmyk, _grey_alpha, _one_bit) for t in make()]


def write_files(folder: Path, items) -> dict[str, Path]:
    """Write catalogue items into ``folder``; missing files are not written. Returns kind -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for item in items:
        p = folder / item.name
        if item.data is not None:
            p.write_bytes(item.data)
        paths[item.kind] = p
    return paths


def deep_png(side: int = 16384, bit_depth: int = 16) -> bytes:
    """A real, valid greyscale PNG of side x side pixels at ``bit_depth`` bits, all black: about 0.5 MB on
    disk at 16384 x 16384 x 16 bits, 512 MiB once decoded (a decompression bomb by bytes, not pixels)."""
    ihdr = struct.pack(">IIBBBBB", side, side, bit_depth, 0, 0, 0, 0)
    row = b"\x00" * (1 + side * bit_depth // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
