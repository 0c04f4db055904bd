"""Files that cannot lie (issue 13): a file on disk is the image the database describes, or ingest says so.

- the managed store: two databases sharing one ``CBIR_PG_HOME`` import different MedMNIST ``.npz`` files
  under the same dataset key; each embeds its own pixels, never the other's (the PNG is named by its
  pixel hash); a managed file swapped for another image is a recorded ``pixel_hash_mismatch``, no vector;
- non-regular files (a FIFO, ``/dev/zero``, a symlink to either, a directory) in import and in ingest
  are one recorded error each, the run goes on, and a later ingest is not blocked; every run here is a
  subprocess with a timeout, so the old behaviour (blocking forever on a FIFO) fails instead of hanging;
- manifest paths outside the dataset root (``../``, absolute) are refused unless allowed;
- decompression is bounded in bytes before decoding (a 0.5 MB 16384x16384 16-bit PNG, a DICOM header
  claiming 65535x65535x100 frames).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from datasets_fixtures import write_csv
from relhelp import deep_png, good_png, pydicom_file

from cbir_pg.db.database import Database
from cbir_pg.images import DecodeError, decode_bytes, decode_file, pixel_hash

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODEL = "tiny_cnn"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")])
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    return env


def _python(code: str, timeout: float = 240) -> dict:
    """Run ``code`` in a fresh interpreter (it prints one JSON line last); a run that does not finish
    within ``timeout`` seconds (blocked on a FIFO, decoding gigabytes) is killed and fails the test."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run did not finish within {timeout:.0f} s (blocked on a file?)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ingest(dsn: str, timeout: float = 300) -> dict:
    return _python(
        "import json\n"
        "from cbir_pg.db.database import Database\n"
        "from cbir_pg.ingest.worker import run_ingest\n"
        f"s = run_ingest(Database({dsn!r}), {MODEL!r}, batch_size=8, loader_workers=0, device='cpu', progress=False)\n"
        "print(json.dumps({'embedded': s.embedded, 'failed': s.failed, 'errors': s.errors,"
        " 'remaining': s.remaining}))",
        timeout,
    )


def _import_csv(dsn: str, manifest: Path, name: str, timeout: float = 240, **kw) -> dict:
    opts = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    return _python(
        "import json\n"
        "from cbir_pg.db.database import Database\n"
        "from cbir_pg.datasets.importer import import_dataset\n"
        f"s = import_dataset(Database({dsn!r}), 'csv', {str(manifest)!r}, name={name!r}, modality='XR', region='chest',"
        f" progress=False{', ' + opts if opts else ''})\n"
        "print(json.dumps({'imported': s.imported, 'errors': s.errors}))",
        timeout,
    )


def _errors(dsn: str, stage: str | None = None) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as c:
        return c.execute(
            "select coalesce(source, ''), reason, message from cbir.error"
            " where %(stage)s::text is null or stage = %(stage)s order by id",
            {"stage": stage},
        ).fetchall()


def _manifest(root: Path, names: list[str], *, good: int = 4, seed: int = 300) -> Path:
    """A CSV manifest of ``good`` real PNGs written into ``root`` plus rows naming ``names``."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(good):
        (root / f"good_{i}.png").write_bytes(good_png(seed + i))
        rows.append([f"good_{i}.png", "normal" if i % 2 else "pneumonia", f"p{i}"])
    rows += [[n, "normal", f"x{j}"] for j, n in enumerate(names)]
    return write_csv(root / "labels.csv", ["path", "label", "patient"], rows)


# --------------------------------------------------------------------------- 1. the managed store
def _medmnist_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, train_images=images, train_labels=labels.reshape(-1, 1))
    return path


def _stored_rows(dsn: str) -> list[tuple[str, str, int, str]]:
    with psycopg.connect(dsn) as c:
        return c.execute(
            "select d.root, i.uri, (i.extra->>'index')::int, i.content_hash from cbir.image i"
            " join cbir.dataset d on d.id = i.dataset_id where not i.excluded order by i.id"
        ).fetchall()


def test_two_databases_sharing_a_home_never_embed_each_others_pixels(
    template_db: str, clone_db, medmnist_dir: Path, tmp_path: Path
) -> None:
    """Same dataset key, same home, different .npz: every stored row's file holds that database's own
    pixels, and ingest of both embeds each database's own images, with no failure."""
    chest = np.load(medmnist_dir / "pneumoniamnist_subset.npz")
    breast = np.load(medmnist_dir / "breastmnist.npz")
    n = 24
    a = _medmnist_npz(tmp_path / "pneumoniamnist_a.npz", chest["train_images"][:n], chest["train_labels"][:n])
    b = _medmnist_npz(
        tmp_path / "pneumoniamnist_b.npz", breast["train_images"][:n], breast["train_labels"][:n]
    )
    from cbir_pg.datasets.importer import import_dataset

    arrays = {}
    dbs = {}
    for tag, npz in (("a", a), ("b", b)):
        dsn = clone_db(template_db)
        import_dataset(
            Database(dsn), "medmnist", npz, name="shared_key", flag="pneumoniamnist", progress=False
        )
        dbs[tag], arrays[tag] = dsn, np.load(npz)["train_images"]

    for tag, dsn in dbs.items():
        rows = _stored_rows(dsn)
        assert len(rows) >= n - 2  # exact duplicates within one file are excluded
        for root, uri, index, h in rows:
            own = arrays[tag][index]
            file_pixels = decode_file(Path(root) / uri)
            assert np.array_equal(file_pixels[:, :, 0], own), f"database {tag}: {uri} holds other pixels"
            assert pixel_hash(file_pixels) == h and h in uri  # the pixel hash names the file

    for tag, dsn in dbs.items():
        s = _ingest(dsn)
        assert s["failed"] == 0 and s["embedded"] == len(_stored_rows(dsn)), (tag, s)


def test_ingest_refuses_a_managed_file_whose_pixels_changed(
    db: str, medmnist_dir: Path, tmp_path: Path
) -> None:
    """A managed PNG overwritten with another image (same size, valid PNG) is a recorded
    ``pixel_hash_mismatch`` for that image, never a vector; the rest are embedded."""
    from PIL import Image

    from cbir_pg.datasets.importer import import_dataset

    src = np.load(medmnist_dir / "breastmnist.npz")
    npz = _medmnist_npz(tmp_path / "breastmnist_t.npz", src["train_images"][:16], src["train_labels"][:16])
    import_dataset(Database(db), "medmnist", npz, name="tampered", flag="breastmnist", progress=False)
    rows = _stored_rows(db)
    root, uri, _, _ = rows[3]
    Image.fromarray(np.asarray(src["train_images"][100])).save(Path(root) / uri, format="PNG")

    s = _ingest(db)
    # each of the run's attempts (max_attempts = 3) is refused and recorded; the others are embedded
    assert set(s["errors"]) == {"pixel_hash_mismatch"} and s["embedded"] == len(rows) - 1, s
    errs = _errors(db, "decode")
    assert errs and all(e[1] == "pixel_hash_mismatch" and e[0].endswith(uri) for e in errs)
    with psycopg.connect(db) as c:
        stored = c.execute(
            "select count(*) from cbir.embedding_tiny_cnn e join cbir.image i on i.id = e.image_id"
            " where i.uri = %s",
            (uri,),
        ).fetchone()[0]
    assert stored == 0


# --------------------------------------------------------------------------- 2. non-regular files
def _non_regular(folder: Path) -> dict[str, Path]:
    """A FIFO, a symlink to /dev/zero, a symlink to the FIFO and a directory, named like images."""
    folder.mkdir(parents=True, exist_ok=True)
    fifo = folder / "fifo.png"
    os.mkfifo(fifo)
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "to_fifo.png").symlink_to(fifo)
    (folder / "dir.png").mkdir()
    return {p.name: p for p in (fifo, folder / "zero.png", folder / "to_fifo.png", folder / "dir.png")}


def test_decode_refuses_non_regular_files_without_blocking(tmp_path: Path) -> None:
    paths = _non_regular(tmp_path)
    got = _python(
        "import json\n"
        "from cbir_pg.images import decode_file, DecodeError\n"
        "out = {}\n"
        f"for p in {[str(p) for p in paths.values()]!r} + ['/dev/zero']:\n"
        "    try:\n"
        "        decode_file(p); out[p] = 'decoded'\n"
        "    except DecodeError as e:\n"
        "        out[p] = e.reason\n"
        "print(json.dumps(out))",
        timeout=60,
    )
    assert got == {
        str(paths["fifo.png"]): "not_a_regular_file",
        str(paths["zero.png"]): "not_a_regular_file",
        str(paths["to_fifo.png"]): "not_a_regular_file",
        str(paths["dir.png"]): "not_a_file",
        "/dev/zero": "not_a_regular_file",
    }


def test_import_records_non_regular_files_and_goes_on(db: str, tmp_path: Path) -> None:
    root = tmp_path / "src"
    paths = _non_regular(root)
    s = _import_csv(db, _manifest(root, list(paths)), "nonreg")
    assert s["imported"] == 4
    errs = _errors(db, "import")
    for name in paths:
        hits = [e for e in errs if e[0] == name]
        # a symlink to /dev/zero also leaves the dataset root (issue 22): refused as that, before any read
        want = ("outside_root",) if name == "zero.png" else ("not_a_regular_file", "not_a_file")
        assert len(hits) == 1 and hits[0][1] in want, (name, errs)
    with psycopg.connect(db) as c:
        assert (
            c.execute("select import_status from cbir.dataset where key = 'nonreg'").fetchone()[0]
            == "complete"
        )


def test_ingest_records_files_swapped_for_fifos_and_devices_and_is_not_blocked_later(
    db: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    _import_csv(db, _manifest(root, [], good=8), "swapped")
    (root / "good_1.png").unlink()
    os.mkfifo(root / "good_1.png")
    (root / "good_2.png").unlink()
    (root / "good_2.png").symlink_to("/dev/zero")
    (root / "good_3.png").unlink()
    (root / "good_3.png").symlink_to(root / "good_1.png")

    first = _ingest(db)
    assert first["embedded"] == 5 and set(first["errors"]) == {"not_a_regular_file"}, first
    sources = {e[0]: e[1] for e in _errors(db, "decode")}
    assert {Path(s).name for s in sources} == {"good_1.png", "good_2.png", "good_3.png"}
    assert set(sources.values()) == {"not_a_regular_file"}

    # a later run is not blocked by the same files: it finishes, with nothing left to do
    second = _ingest(db)
    assert second["embedded"] == 0 and second["remaining"] == 0, second
    # nor is a run after the files are fixed and their failures cleared
    for name in ("good_1.png", "good_2.png", "good_3.png"):
        (root / name).unlink()
        (root / name).write_bytes(good_png(300 + int(name[5])))
    with psycopg.connect(db) as c:
        c.execute("delete from cbir.ingest_failure")
    third = _ingest(db)
    assert third["embedded"] == 3 and third["failed"] == 0, third


# --------------------------------------------------------------------------- 3. outside the dataset root
def test_manifest_paths_outside_the_root_are_refused_unless_allowed(
    db: str, template_db: str, clone_db, tmp_path: Path
) -> None:
    root = tmp_path / "ds" / "src"
    outside = tmp_path / "ds" / "outside.png"
    outside.parent.mkdir(parents=True)
    outside.write_bytes(good_png(7))
    absolute = tmp_path / "abs.png"
    absolute.write_bytes(good_png(8))
    names = ["../outside.png", str(absolute), "sub/../../outside.png"]
    manifest = _manifest(root, names)
    (root / "sub").mkdir()

    s = _import_csv(db, manifest, "rooted")
    assert s["imported"] == 4 and s["errors"] == {"outside_root": 3}, s
    errs = _errors(db, "import")
    assert all(e[1] == "outside_root" and "--allow-outside-root" in e[2] for e in errs)
    assert {e[0] for e in errs} == set(names)

    other = clone_db(template_db)
    s = _import_csv(other, manifest, "rooted", allow_outside_root=True)
    assert s["imported"] == 7 and not s["errors"], s


def test_cli_has_allow_outside_root() -> None:
    from typer.testing import CliRunner

    from cbir_pg.app.cli import app

    out = CliRunner().invoke(app, ["datasets", "import", "--help"], env={"COLUMNS": "200"})
    assert "--allow-outside-root" in out.output


# --------------------------------------------------------------------------- 4. decompression by bytes
def test_a_small_deep_png_is_refused_before_decoding(tmp_path: Path) -> None:
    """0.5 MB on disk, 16384x16384 at 16 bits: 512 MiB once decoded (and GBs of working copies). It
    passes a pixel-count guard; it must be refused by its decoded size, under a 1.5 GB memory limit."""
    path = tmp_path / "deep16.png"
    path.write_bytes(deep_png(16384, 16))
    assert path.stat().st_size < 1_000_000
    got = _python(
        "import json, resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))\n"
        "from cbir_pg.images import decode_file, DecodeError\n"
        "try:\n"
        f"    decode_file({str(path)!r}); print(json.dumps({{'reason': 'decoded'}}))\n"
        "except DecodeError as e:\n"
        "    print(json.dumps({'reason': e.reason, 'message': str(e)}))\n"
        "except MemoryError:\n"
        "    print(json.dumps({'reason': 'MemoryError'}))\n",
        timeout=120,
    )
    assert got["reason"] == "decompression_bomb", got
    assert "16384x16384" in got["message"] and "\n" not in got["message"]


def test_an_eight_bit_image_of_the_same_pixels_per_byte_budget_still_decodes() -> None:
    """The bound is on bytes: a valid 16-bit image of ordinary size decodes."""
    import io

    from PIL import Image

    a16 = (np.arange(512 * 512, dtype=np.uint32).reshape(512, 512) % 65535).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(a16).save(buf, "PNG")
    assert decode_bytes(buf.getvalue(), "ok16.png").shape == (512, 512, 3)


def test_a_dicom_header_claiming_gigabytes_is_refused_before_decoding(tmp_path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 100
    path = tmp_path / "huge.dcm"
    ds.save_as(path)
    with pytest.raises(DecodeError) as info:
        decode_file(path)
    assert info.value.reason == "decompression_bomb" and "65535x65535x100 frames" in str(info.value)


def test_folder_adapters_record_non_regular_entries(db: str, tmp_path: Path) -> None:
    """An image folder or a DICOM folder holding a FIFO or a /dev/zero symlink named like an image: one
    recorded error each, the rest imported."""
    code = (
        "import json\n"
        "from cbir_pg.db.database import Database\n"
        "from cbir_pg.datasets.importer import import_dataset\n"
        "out = {}\n"
        f"s = import_dataset(Database({db!r}), 'imagefolder', {str(tmp_path / 'f')!r}, name='nonreg_f', modality='XR',"
        " region='chest', progress=False)\n"
        "out['folder'] = [s.imported, s.errors]\n"
        f"s = import_dataset(Database({db!r}), 'dicom', {str(tmp_path / 'd')!r}, name='nonreg_d', progress=False)\n"
        "out['dicom'] = [s.imported, s.errors]\n"
        "print(json.dumps(out))"
    )
    cls = tmp_path / "f" / "normal"
    cls.mkdir(parents=True)
    for i in range(3):
        (cls / f"good_{i}.png").write_bytes(good_png(900 + i))
    os.mkfifo(cls / "fifo.png")
    (cls / "zero.png").symlink_to("/dev/zero")
    d = tmp_path / "d"
    d.mkdir()
    (d / "ct.dcm").write_bytes(pydicom_file("CT_small.dcm").read_bytes())
    os.mkfifo(d / "fifo.dcm")
    (d / "zero.dcm").symlink_to("/dev/zero")
    got = _python(code, timeout=180)
    assert got["folder"] == [3, {"not_a_regular_file": 2}], got
    assert got["dicom"] == [1, {"not_a_regular_file": 2}], got
