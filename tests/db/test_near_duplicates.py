"""Near duplicates that survive resizing: the same picture stored at another size and re-encoded is
flagged by the default profile, listed as a cross-split pair under --dedupe exact, and never flagged by
the paper profile."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from datasets_fixtures import write_csv
from PIL import Image

from cbir_pg.datasets import import_dataset
from cbir_pg.db.database import Database


def _picture(seed: int) -> Image.Image:
    """A smooth 96 px greyscale picture (random 12 x 12 content, upsampled)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    return Image.fromarray(small).resize((96, 96), Image.Resampling.BICUBIC)


def _folder(root: Path) -> Path:
    rows = []
    for k in range(6):
        p = f"img/{k}.png"
        (root / "img").mkdir(parents=True, exist_ok=True)
        _picture(k).save(root / p)
        rows.append(
            [
                p,
                "pneumonia" if k % 2 else "normal",
                ["train", "test", "val"][k % 3],
                f"P{k}",
                "",
                "",
                "XR",
                "chest",
            ]
        )
    # scan 1 (test) again in train: a 2 px border cropped, resized to 160 px and stored as JPEG
    buf = io.BytesIO()
    _picture(1).crop((2, 2, 94, 94)).resize((160, 160), Image.Resampling.BILINEAR).convert("RGB").save(
        buf, format="JPEG", quality=80
    )
    (root / "img" / "1_big.jpg").write_bytes(buf.getvalue())
    rows.append(["img/1_big.jpg", "pneumonia", "train", "P9", "", "", "XR", "chest"])
    return write_csv(
        root / "manifest.csv", ["path", "label", "split", "patient", "sex", "age", "modality", "region"], rows
    )


def test_resized_reencoded_copy_is_a_near_duplicate(db, conn, tmp_path):
    from typer.testing import CliRunner

    from cbir_pg.app.cli import app
    from cbir_pg.datasets.dedupe import cross_split_pairs
    from cbir_pg.images import decode_file, perceptual_hash

    manifest = _folder(tmp_path / "d")
    a = int(perceptual_hash(decode_file(tmp_path / "d" / "img" / "1.png")), 16)
    b = int(perceptual_hash(decode_file(tmp_path / "d" / "img" / "1_big.jpg")), 16)
    dist = bin(a ^ b).count("1")
    assert 0 < dist <= 4  # not identical (the old rule missed it), within the threshold

    s = import_dataset(Database(db), "csv", manifest, progress=False)
    assert (s.exact_duplicates, s.near_duplicates) == (0, 1)
    flagged = conn.execute(
        "select d.uri, k.uri, k.split from cbir.image d join cbir.image k on k.id = d.duplicate_of"
    ).fetchall()
    assert flagged == [("img/1_big.jpg", "img/1.png", "test")]  # the held-out image is kept
    assert cross_split_pairs(conn) == []  # nothing left across splits
    pairs = cross_split_pairs(conn, include_excluded=True)
    assert [(p.uri_a, p.split_a, p.uri_b, p.split_b, p.distance) for p in pairs] == [
        ("img/1.png", "test", "img/1_big.jpg", "train", dist)
    ]

    # the exact rule keeps both: the pair is reported across splits
    s = import_dataset(Database(db), "csv", manifest, dedupe="exact", progress=False)
    assert s.near_duplicates == 0
    pairs = cross_split_pairs(conn)
    assert len(pairs) == 1 and pairs[0].distance == dist
    out = CliRunner().invoke(app, ["--dsn", db, "datasets", "dedupe"])
    assert out.exit_code == 0, out.output
    assert "1 cross-split near-duplicate pairs within 4 bits" in out.output and "img/1_big.jpg" in out.output
    out = CliRunner().invoke(app, ["--dsn", db, "datasets", "dedupe", "-t", str(dist - 1)])
    assert "0 cross-split near-duplicate pairs" in out.output
    from cbir_pg.eval.fidelity import near_duplicate_section
    from cbir_pg.eval.report import write_report

    with Database(db).connection() as c:
        section = near_duplicate_section(c)
    assert section is not None and "<td>manifest</td><td>test</td><td>train</td><td>1</td>" in section, (
        section
    )

    page = write_report(Database(db), tmp_path / "rep", tsne_sample=0, grid_queries=0).index.read_text()
    assert (
        "Near duplicates across splits" in page
        and "<td>manifest</td><td>test</td><td>train</td><td>1</td>" in page
    )

    # the paper profile flags nothing
    s = import_dataset(Database(db), "csv", manifest, profile="paper", progress=False)
    assert (s.exact_duplicates, s.near_duplicates) == (0, 0)
