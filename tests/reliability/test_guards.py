"""The file guards everywhere a file is read (issue 22, section 3).

- every decompression bomb, not one kind: a 16384x16384 palette PNG with transparency (a few hundred
  kB, 256 MiB decoded at one byte per pixel, GBs once expanded to RGBA) is refused from its header under
  a 1.5 GB memory limit, and a ``MemoryError`` is a one-line ``DecodeError``;
- a symlink inside a dataset root that points outside it is refused at import (the path is resolved);
- the page's pixel and thumbnail reads go through the guarded reader: a FIFO does not block (every run
  here is a subprocess with a timeout), ``/dev/zero`` behind a symlink is refused, and a file replaced
  after import is refused rather than shown as the case, and never cached under the case's hash.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from relhelp import _png_chunk, good_png

from cbir_pg.images import decode_bytes, pixel_hash

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def _python(code: str, timeout: float = 120) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")])
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run did not finish within {timeout:.0f} s (blocked on a file?)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def palette_bomb(side: int = 16384) -> bytes:
    """A valid 8-bit palette PNG of side x side pixels with a tRNS chunk, all index 0."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 3, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + side)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"PLTE", bytes(range(256)) * 3)
        + _png_chunk(b"tRNS", b"\x00")
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _decode_under_limit(path: Path, limit_mb: int = 1536) -> dict:
    return _python(
        "import json, resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit_mb} * 2**20, {limit_mb} * 2**20))\n"
        "from cbir_pg.images import decode_bytes, DecodeError\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "try:\n"
        "    decode_bytes(data, 'upload.png'); print(json.dumps({'reason': 'decoded'}))\n"
        "except DecodeError as e:\n"
        "    print(json.dumps({'reason': e.reason, 'message': str(e)}))\n"
        "except MemoryError:\n"
        "    print(json.dumps({'reason': 'MemoryError'}))\n"
    )


# --------------------------------------------------------------------------- decompression bombs
def test_a_palette_png_with_transparency_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    path.write_bytes(palette_bomb())
    assert path.stat().st_size < 1_000_000
    got = _decode_under_limit(path)
    assert got["reason"] == "decompression_bomb", got
    assert "16384x16384" in got["message"] and "\n" not in got["message"]


def test_a_memory_error_while_decoding_is_a_one_line_decode_error(tmp_path: Path) -> None:
    """An ordinary image that does not fit the memory the process has left is a recorded error."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((4000, 4000, 4), dtype=np.uint8), "RGBA").save(buf, "PNG")
    path = tmp_path / "rgba.png"
    path.write_bytes(buf.getvalue())
    got = _python(
        "import json, resource\n"
        "from cbir_pg.images import decode_bytes, DecodeError\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (used + 40 * 2**20, used + 40 * 2**20))\n"
        "try:\n"
        "    decode_bytes(data, 'rgba.png'); print(json.dumps({'reason': 'decoded'}))\n"
        "except DecodeError as e:\n"
        "    print(json.dumps({'reason': e.reason, 'message': str(e)}))\n"
        "except MemoryError:\n"
        "    print(json.dumps({'reason': 'MemoryError'}))\n"
    )
    assert got["reason"] == "out_of_memory", got
    assert got["message"].startswith("rgba.png: out_of_memory")


def test_ordinary_images_of_every_mode_still_decode() -> None:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for mode, arr in (
        ("L", rng.integers(0, 255, (300, 200), dtype=np.uint8)),
        ("RGB", rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)),
        ("RGBA", rng.integers(0, 255, (300, 200, 4), dtype=np.uint8)),
        ("I;16", rng.integers(0, 65535, (300, 200), dtype=np.uint16)),
    ):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        assert decode_bytes(buf.getvalue(), f"{mode}.png").shape == (300, 200, 3), mode
        if mode in ("L", "RGB"):
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "TIFF")
            assert decode_bytes(buf.getvalue(), f"{mode}.tif").shape == (300, 200, 3), mode
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), "L").convert("P").save(
        buf, "PNG", transparency=0
    )
    assert decode_bytes(buf.getvalue(), "p.png").shape == (64, 64, 3)


# --------------------------------------------------------------------------- symlinks leaving the root
def test_a_symlink_inside_the_root_that_leads_outside_is_refused(db: str, tmp_path: Path) -> None:
    import csv

    from cbir_pg.datasets.importer import import_dataset
    from cbir_pg.db.database import Database

    root = tmp_path / "ds"
    root.mkdir()
    secret = tmp_path / "elsewhere" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(good_png(11))
    (root / "good.png").write_bytes(good_png(12))
    (root / "link.png").symlink_to(secret)
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(secret.parent, target_is_directory=True)
    inside = root / "inner.png"
    inside.write_bytes(good_png(13))
    (root / "alias.png").symlink_to(inside)  # a link that stays inside the root is fine
    manifest = root / "labels.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient"])
        for i, name in enumerate(["good.png", "link.png", "sub/up/secret.png", "alias.png"]):
            w.writerow([name, "normal", f"p{i}"])
    s = import_dataset(
        Database(db), "csv", str(manifest), name="linked", modality="XR", region="chest", progress=False
    )
    assert s.imported == 2 and s.errors == {"outside_root": 2}, (s.imported, s.errors)
    with Database(db).connection() as conn:
        uris = [r["uri"] for r in conn.execute("select uri from cbir.image order by uri")]
        msgs = [
            r["message"] for r in conn.execute("select message from cbir.error where reason = 'outside_root'")
        ]
    assert uris == ["alias.png", "good.png"]
    assert all("symlink" in m for m in msgs), msgs


# --------------------------------------------------------------------------- the page's reads
def _cache_get(cache_dir: Path, path: Path, content_hash: str | None) -> dict:
    return _python(
        "import json\n"
        "from pathlib import Path\n"
        "from cbir_pg.app.serve.thumbs import PngCache\n"
        "from cbir_pg.errors import NotFoundError\n"
        "try:\n"
        f"    png, key = PngCache(Path({str(cache_dir)!r})).get(Path({str(path)!r}), {content_hash!r}, 't160', 160)\n"
        "    print(json.dumps({'ok': True, 'key': key, 'size': len(png)}))\n"
        "except NotFoundError as e:\n"
        "    print(json.dumps({'ok': False, 'message': str(e)}))\n",
        timeout=60,
    )


def test_the_page_never_blocks_on_a_fifo_or_reads_dev_zero(tmp_path: Path) -> None:
    fifo = tmp_path / "case.png"
    os.mkfifo(fifo)
    got = _cache_get(tmp_path / "cache", fifo, None)
    assert not got["ok"] and "not_a_regular_file" in got["message"], got
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    got = _cache_get(tmp_path / "cache", zero, None)
    assert not got["ok"] and "not_a_regular_file" in got["message"], got
    assert str(tmp_path) not in json.dumps(got)  # no path reaches a client


def test_a_replaced_file_is_refused_and_never_cached_as_the_case(tmp_path: Path) -> None:
    case = tmp_path / "case.png"
    original = good_png(21)
    recorded = pixel_hash(decode_bytes(original))
    case.write_bytes(good_png(22))  # replaced after import
    cache = tmp_path / "cache"
    got = _cache_get(cache, case, recorded)
    assert not got["ok"] and "pixel_hash_mismatch" in got["message"], got
    assert not list(cache.rglob("*.png"))  # nothing cached under the case's hash

    case.write_bytes(original)  # restored: the case is shown, keyed by the verified pixels
    got = _cache_get(cache, case, recorded)
    assert got["ok"] and got["key"].startswith(recorded[:40]), got


# --------------------------------------------------------------------------- the embedded postmaster's ids
@pytest.mark.skipif(os.geteuid() != 0, reason="the server drops ids only when started as root")
def test_the_embedded_server_keeps_none_of_roots_groups(pg_server_dsn: str) -> None:
    import psycopg

    if os.environ.get("CBIR_PG_TEST_DSN"):
        pytest.skip("an external server: not started by cbir-pg")
    with psycopg.connect(pg_server_dsn) as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    ids = {line.split(":")[0]: line.split(":")[1].split() for line in status if ":" in line}
    assert "0" not in ids["Uid"], ids["Uid"]
    assert "0" not in ids["Gid"], ids["Gid"]
    assert "0" not in ids["Groups"], ids["Groups"]


# --------------------------------------------------------------------------- the Python façade (section 2)
def test_facade_sql_runs_read_only_with_reader_privileges(db: str, tmp_path: Path) -> None:
    import psycopg
    from relhelp import relation_snapshot

    import cbir_pg
    from cbir_pg.errors import CbirError

    with psycopg.connect(db) as c:  # the owner's data: the notebook sees what the owner sees
        ds = c.execute(
            "insert into cbir.dataset (key, kind, name, import_status, imported_at)"
            " values ('nb', 'csv', 'nb', 'complete', now()) returning id"
        ).fetchone()[0]
        c.execute("insert into cbir.image (dataset_id, uri, split) values (%s, 'a.png', 'test')", (ds,))
    client = cbir_pg.connect(db)
    assert client.sql("select current_user as u").u.tolist() == ["cbir_analyst"]
    assert client.sql("select count(*) as n from cbir.image").n.tolist() == [1]
    assert client.sql("select %(x)s::int + 1 as y", {"x": 1}).y.tolist() == [2]
    before = relation_snapshot(db)
    marker = tmp_path / "ran"
    for statement in (
        f"copy (select 1) to program 'touch {marker}'",
        f"copy (select 1) to '{tmp_path / 'out.txt'}'",
        "select pg_read_file('/etc/hostname')",
        "create table cbir.stolen (a int)",
        "create temp table scratch (a int)",
        "insert into cbir.label (key, name) values ('x', 'x')",
        "drop table cbir.image",
        "alter role cbir_analyst superuser",
        f"reset role; copy (select 1) to program 'touch {marker}'",
        f"commit; copy (select 1) to program 'touch {marker}'",
    ):
        with pytest.raises(CbirError):
            client.sql(statement)
    assert not marker.exists() and not (tmp_path / "out.txt").exists()
    assert relation_snapshot(db) == before

    # writing is a separate method that says so
    client.sql_write("create table public.notes (a int)")
    assert client.sql("select count(*) as n from cbir.image").n.tolist() == [1]
    assert relation_snapshot(db) != before


# --------------------------------------------------------------------------- a reader cannot stall the owner
def _reader(db: str, name: str) -> str:
    from cbir_pg.db.database import Database
    from cbir_pg.db.roles import add_role, login_dsn

    with Database(db).connection(vector=False) as conn:
        conn.autocommit = True
        made = add_role(conn, name, "reader")
    return login_dsn(Database(db), name, made.password)


def _drop(db: str, name: str) -> None:
    from cbir_pg.db.database import Database
    from cbir_pg.db.roles import drop_role

    with Database(db).connection(vector=False) as conn:
        conn.autocommit = True
        drop_role(conn, name)


def _migrate(db: str, lock_timeout: int = 2) -> dict:
    return _python(
        "import json, os\n"
        f"os.environ['CBIR_PG_LOCK_TIMEOUT'] = '{lock_timeout}'\n"
        "from cbir_pg.db.database import Database\n"
        "from cbir_pg.db.migrate import migrate\n"
        "from cbir_pg.errors import CbirError\n"
        "try:\n"
        f"    migrate(Database({db!r})); print(json.dumps({{'ok': True}}))\n"
        "except CbirError as e:\n"
        "    print(json.dumps({'ok': False, 'kind': type(e).__name__, 'message': str(e)}))\n",
        timeout=90,
    )


def test_a_reader_can_take_no_advisory_lock_and_no_temp_table(db: str) -> None:
    import psycopg

    from cbir_pg.db.database import Database
    from cbir_pg.db.migrate import MIGRATION_LOCK, apply_sql

    apply_sql(Database(db))  # a database's own ACL (TEMP) is not copied from the test template
    reader = _reader(db, "guard_reader_a")
    try:
        for statement in (
            f"select pg_advisory_lock({MIGRATION_LOCK})",
            f"select pg_try_advisory_lock({MIGRATION_LOCK})",
            "select pg_advisory_xact_lock(hashtextextended('cbir.import:x', 0))",
            "select pg_advisory_lock_shared(1, 2)",
            "create temp table big (a int)",
        ):
            with psycopg.connect(reader) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(statement)
    finally:
        _drop(db, "guard_reader_a")


def test_a_held_migration_lock_times_out_and_names_its_holder(db: str) -> None:
    import psycopg

    from cbir_pg.db.migrate import MIGRATION_LOCK

    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("set application_name = 'the-holder'")
        holder.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        pid = holder.execute("select pg_backend_pid()").fetchone()[0]
        got = _migrate(db)
    assert not got["ok"] and got["kind"] == "LockTimeoutError", got
    assert f"pid {pid}" in got["message"] and "the-holder" in got["message"], got
    assert "CBIR_PG_LOCK_TIMEOUT" in got["message"]
    assert _migrate(db)["ok"]  # released: it goes through


def test_a_reader_holding_a_view_open_delays_migrate_by_the_lock_timeout_only(db: str) -> None:
    import psycopg

    reader = _reader(db, "guard_reader_b")
    try:
        with psycopg.connect(reader) as c:
            c.execute("select count(*) from cbir_report.leaderboard")  # idle in transaction from here
            got = _migrate(db)
            c.rollback()
        assert not got["ok"] and got["kind"] == "LockTimeoutError", got
        assert "guard_reader_b" in got["message"], got
        assert _migrate(db)["ok"]
    finally:
        _drop(db, "guard_reader_b")


# --------------------------------------------------------------------------- embeddings import-h5 (section 5)
H5_LABELS = ["XR/chest/normal", "XR/chest/pneumonia"]


def _dkfz_import(db: str, root: Path, n: int = 6) -> list[str]:
    from datasets_fixtures import img, write_csv

    from cbir_pg.datasets.importer import import_dataset
    from cbir_pg.db.database import Database

    rows, keys = [], []
    for i in range(n):
        fp = f"nih14/images_000/{i:05d}.png"
        img(root / fp, 500 + i)
        label = H5_LABELS[i % 2]
        rows.append(
            [fp, "nih14", ["train", "test"][i % 2], "XR", "chest", *[int(x == label) for x in H5_LABELS]]
        )
        keys.append(fp)
    csv_path = write_csv(
        root / "dkfz_splits.csv",
        ["filepath", "dataset", "split", "modality", "anatomic_region", *H5_LABELS],
        rows,
    )
    import_dataset(Database(db), "dkfz-splits", csv_path, profile="paper", progress=False)
    return keys


def _h5(path: Path, items: dict) -> Path:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in items.items():
            if callable(v):
                v(f, k)
            else:
                f.create_dataset(k, data=v)
    return path


def _unit_vectors(n: int, dim: int = 512, seed: int = 0):
    import numpy as np

    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _h5_state(db: str) -> tuple:
    import psycopg

    with psycopg.connect(db) as c:
        table = c.execute("select to_regclass('cbir.embedding_biomedclip') is not null").fetchone()[0]
        enc = c.execute("select count(*) from cbir.encoder where key = 'biomedclip'").fetchone()[0]
    return table, enc


def test_a_failed_import_h5_changes_nothing(db: str, tmp_path: Path) -> None:
    from cbir_pg.db.database import Database
    from cbir_pg.errors import InputError, NotFoundError
    from cbir_pg.ingest.h5 import import_h5

    keys = _dkfz_import(db, tmp_path / "data")
    vecs = _unit_vectors(len(keys))
    folder = tmp_path / "emb"
    _h5(folder / "a_good.h5", dict(zip(keys, vecs, strict=True)))
    _h5(folder / "b_bad.h5", {keys[0]: _unit_vectors(1, 256)[0]})
    with pytest.raises(InputError, match="dimension is 512.*nothing was imported from the 2 files"):
        import_h5(Database(db), folder, "biomedclip")
    assert _h5_state(db) == (False, 0)  # no table, no encoder row, no recorded file: ingest stays possible

    unknown = _h5(tmp_path / "unknown" / "x.h5", {"nowhere/1.png": vecs[0], "nowhere/2.png": vecs[1]})
    with pytest.raises(NotFoundError, match="nothing was imported"):
        import_h5(Database(db), unknown, "biomedclip")
    assert _h5_state(db) == (False, 0)

    assert import_h5(Database(db), folder / "a_good.h5", "biomedclip").loaded == len(keys)
    assert _h5_state(db) == (True, 1)


def test_import_h5_checks_values_and_types_before_trusting_them(db: str, tmp_path: Path) -> None:
    import numpy as np

    from cbir_pg.db.database import Database
    from cbir_pg.errors import InputError
    from cbir_pg.ingest.h5 import import_h5

    keys = _dkfz_import(db, tmp_path / "data")
    vecs = _unit_vectors(len(keys))
    nan = vecs.copy()
    nan[2, 5] = np.nan
    with pytest.raises(InputError, match=r"NaN.*00002\.png"):
        import_h5(
            Database(db), _h5(tmp_path / "nan" / "n.h5", dict(zip(keys, nan, strict=True))), "biomedclip"
        )
    text = _h5(tmp_path / "text" / "t.h5", {keys[0]: np.array([b"a", b"b"])})
    with pytest.raises(InputError, match="not numbers"):
        import_h5(Database(db), text, "biomedclip")
    assert _h5_state(db) == (False, 0)


def test_a_small_compressed_h5_dataset_is_refused_from_its_header(db: str, tmp_path: Path) -> None:
    """8 kB on disk, 2.4 GB once read; and a right-sized dataset stored in one huge chunk."""

    def huge(f, k):
        f.create_dataset(k, shape=(600_000_000,), dtype="f4", compression="gzip", chunks=(1_000_000,))

    def huge_chunk(f, k):
        f.create_dataset(
            k, shape=(512,), maxshape=(None,), dtype="f4", compression="gzip", chunks=(100_000_000,)
        )

    for name, make, expect in (("bomb", huge, "shape (600000000,)"), ("chunk", huge_chunk, "chunks of")):
        path = _h5(tmp_path / name / "x.h5", {"nih14/images_000/00000.png": make})
        assert path.stat().st_size < 100_000
        got = _python(
            "import json, resource\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))\n"
            "from cbir_pg.db.database import Database\n"
            "from cbir_pg.errors import CbirError\n"
            "from cbir_pg.ingest.h5 import import_h5\n"
            "try:\n"
            f"    import_h5(Database({db!r}), {str(path)!r}, 'biomedclip'); print(json.dumps({{'ok': True}}))\n"
            "except CbirError as e:\n"
            "    print(json.dumps({'ok': False, 'message': str(e)}))\n"
            "except MemoryError:\n"
            "    print(json.dumps({'ok': False, 'message': 'MemoryError'}))\n",
            timeout=120,
        )
        assert not got["ok"] and expect in got["message"], got


def test_the_watchdog_holds_a_readers_limits_whatever_it_sets(db: str) -> None:
    """The reader lifts its own limits; the owner's sweep still cancels its long statement and ends its
    transaction left idle (limits passed as 1 s here; the reader limits are minutes)."""
    import threading
    import time

    import psycopg

    from cbir_pg.db.database import Database
    from cbir_pg.db.watchdog import sweep

    reader = _reader(db, "guard_reader_c")
    try:
        with psycopg.connect(reader, autocommit=True) as c:
            c.execute("set statement_timeout = 0")
            c.execute("set idle_in_transaction_session_timeout = 0")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("select cbir.reader_watchdog_v1()")  # a reader cannot call it
        outcome: dict = {}

        def long_statement() -> None:
            with psycopg.connect(reader, autocommit=True) as c:
                c.execute("set statement_timeout = 0")
                try:
                    c.execute("select pg_sleep(60)")
                    outcome["sleep"] = "finished"
                except psycopg.errors.QueryCanceled:
                    outcome["sleep"] = "cancelled"

        t = threading.Thread(target=long_statement)
        t.start()
        deadline = time.monotonic() + 30
        acted = []
        while not acted and time.monotonic() < deadline:
            time.sleep(0.5)
            acted = [a for a in sweep(Database(db), "1 s", "1 h") if a.role_name == "guard_reader_c"]
        t.join(timeout=30)
        assert outcome.get("sleep") == "cancelled", (outcome, acted)
        assert acted[0].action == "cancelled a statement" and acted[0].seconds >= 1

        idle = psycopg.connect(reader)
        idle.execute("set idle_in_transaction_session_timeout = 0")
        idle.execute("select 1")  # a transaction left open
        deadline = time.monotonic() + 30
        acted = []
        while not acted and time.monotonic() < deadline:
            time.sleep(0.5)
            acted = [a for a in sweep(Database(db), "1 h", "1 s") if a.role_name == "guard_reader_c"]
        assert acted and acted[0].action.startswith("ended a session"), acted
        with pytest.raises(psycopg.OperationalError):
            idle.execute("select 1")
        idle.close()
    finally:
        _drop(db, "guard_reader_c")
