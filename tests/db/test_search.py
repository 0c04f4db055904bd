"""``cbir_pg.search`` and ``cbir-pg search``: neighbours with label, dataset, sex and age joined in, a
query by stored id or by file (stored, or embedded on the fly with the same encoder config), hostile
names refused, and the Fig. 2 style grid PNG."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import psycopg
import pytest
from dbhelp import cbir_pg
from PIL import Image
from test_sql_api import build, make_synthetic

from cbir_pg.db.database import Database
from cbir_pg.errors import ConfigError, NotFoundError
from cbir_pg.search import (
    GREEN,
    ORANGE,
    RED,
    draw_grid,
    grid_border,
    grid_size,
    load_image_rgb,
    search,
    search_with_query,
)


def _write_images(root: Path, n: int, labels: list[int], seed: int = 0) -> list[np.ndarray]:
    """One small greyscale PNG per image (``img/<i>.png``), a class-dependent pattern plus noise."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    out = []
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(n):
        c = labels[i] % 4
        base = [xx * 8, yy * 8, (xx + yy) * 4, np.full((32, 32), 128)][c]
        arr = np.clip(base + rng.normal(0, 20, (32, 32)), 0, 255).astype(np.uint8)
        Image.fromarray(arr, "L").save(root / "img" / f"{i}.png")
        out.append(np.repeat(arr[:, :, None], 3, axis=2))
    return out


@pytest.fixture
def stored(db: str, tmp_path: Path):
    root = tmp_path / "data"
    syn = make_synthetic(db, n=300, root=str(root))
    _write_images(root, 300, syn.labels)
    return syn, root


def test_search_by_image_id_joins_label_dataset_patient(db: str, stored, conn):
    syn, _ = stored
    build(db)
    q = syn.ids[4]
    hits = search(Database(db), "toy", image_id=q, k=12)
    assert [h.rank for h in hits] == list(range(1, 13))
    assert q not in [h.image_id for h in hits]
    for h in hits:
        row = conn.execute(
            "select l.key, d.key, p.sex, p.age, i.uri from cbir.image i join cbir.label l on l.id = i.label_id"
            " join cbir.dataset d on d.id = i.dataset_id join cbir.patient p on p.id = i.patient_id where i.id = %s",
            (h.image_id,),
        ).fetchone()
        assert (h.label, h.dataset, h.sex, h.age, h.uri) == row
    sql_rows = conn.execute(
        "select image_id, similarity from cbir.similar_images(%s, 'toy', 12)", (q,)
    ).fetchall()
    assert [(h.image_id, pytest.approx(h.similarity)) for h in hits] == sql_rows


def test_search_filters(db: str, stored, conn):
    syn, _ = stored
    q = syn.ids[9]
    hits = search(
        Database(db),
        "toy",
        image_id=q,
        k=20,
        split="train",
        dataset="alpha",
        exclude_same_patient=True,
        ef_search=100,
    )
    assert len(hits) == 20
    assert all(h.split == "train" and h.dataset == "alpha" for h in hits)
    assert all(h.patient_id != syn.patients[9] for h in hits)
    mr = search(Database(db), "toy", image_id=q, k=5, modality="MR")
    assert len(mr) == 5 and {h.modality for h in mr} == {"MR"}


def test_search_by_path_of_a_stored_file_uses_its_vector(db: str, stored):
    syn, root = stored
    query, hits = search_with_query(Database(db), "toy", path=root / "img" / "7.png", k=5)
    assert query.image_id == syn.ids[7] and not query.embedded_on_the_fly
    assert query.label is not None and query.sex in ("F", "M")
    assert [h.image_id for h in hits] == [
        h.image_id for h in search(Database(db), "toy", image_id=syn.ids[7], k=5)
    ]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"model": "toy'; drop table cbir.image; --"}, ConfigError),
        ({"model": "nope"}, NotFoundError),
        ({"split": "train'; drop table cbir.image; --"}, ConfigError),
        ({"dataset": "alpha'; --"}, ConfigError),
        ({"dataset": "gamma"}, ConfigError),
        ({"modality": "CT; select 1"}, ConfigError),
        ({"k": 0}, ConfigError),
    ],
)
def test_search_rejects_bad_input(db: str, stored, conn, kwargs: dict, error: type):
    syn, _ = stored
    args = {"model": "toy", "image_id": syn.ids[0], **kwargs}
    model = args.pop("model")
    with pytest.raises(error):
        search(Database(db), model, **args)
    assert conn.execute("select count(*) from cbir.image").fetchone()[0] == 300


def test_search_unknown_image(db: str, stored):
    with pytest.raises(NotFoundError):
        search(Database(db), "toy", image_id=10**9)
    with pytest.raises(ConfigError):
        search(Database(db), "toy")  # neither an id nor a file


def test_load_image_rgb_resolves_root_and_uri(db: str, stored):
    syn, root = stored
    rgb = load_image_rgb(Database(db), syn.ids[3])
    assert rgb.shape == (32, 32, 3)
    assert np.array_equal(rgb[:, :, 0], np.asarray(Image.open(root / "img" / "3.png")))


def test_draw_grid_size_and_frames(tmp_path: Path):
    rng = np.random.default_rng(0)
    query = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    neighbours = [rng.integers(0, 255, (20 + i, 50, 3), dtype=np.uint8) for i in range(4)]
    matches = [True, False, True, False]
    out = draw_grid(query, neighbours, matches, tmp_path / "g.png", tile=64)
    im = np.asarray(Image.open(out).convert("RGB"))
    width, height = grid_size(4, tile=64)
    assert (im.shape[1], im.shape[0]) == (width, height)
    cell = 64 + 2 * grid_border(64)
    step = (width - cell) // 4
    assert tuple(im[1, 1]) == ORANGE
    for i, m in enumerate(matches, start=1):
        assert tuple(im[1, i * step + 1]) == (GREEN if m else RED)
    with_captions = draw_grid(
        query, neighbours, matches, tmp_path / "c.png", captions=["a", "b\nc", "d", "e"], tile=64
    )
    assert Image.open(with_captions).size == grid_size(4, tile=64, captions=2)
    with pytest.raises(ConfigError):
        draw_grid(query, neighbours, [True], tmp_path / "bad.png")


def _cli(db: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m cbir_pg --dsn DB ARGS`` (two minutes at most)."""
    return cbir_pg("--dsn", db, *args, env=env, timeout=120)


def test_cli_search_prints_neighbours_and_writes_grid(db: str, stored, tmp_path: Path):
    syn, _ = stored
    build(db)
    png = tmp_path / "out" / "grid.png"
    out = _cli(
        db,
        *("search", "--image-id", str(syn.ids[0]), "--model", "toy", "-k", "4", "--exclude-same-patient"),
        *("--png", str(png)),
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    hits = search(Database(db), "toy", image_id=syn.ids[0], k=4, exclude_same_patient=True)
    for h in hits:
        assert h.uri in out.stdout and h.label in out.stdout and f"{h.similarity:.4f}" in out.stdout
    assert Image.open(png).size == grid_size(4, tile=128, captions=3)
    bad = _cli(db, "search", "--image-id", "1", "--model", "toy", "--split", "x';--")
    assert bad.returncode == 2 and "is not a split" in bad.stderr


# --------------------------------------------------------------------------- a new file, embedded on the fly
@pytest.fixture
def tiny(db: str, tmp_path: Path):
    """tiny_cnn vectors of real (small) images, stored under the encoder's own config hash."""
    from cbir_pg.encoders import create_encoder, embed_arrays, get_config
    from cbir_pg.images import pixel_hash

    config = get_config("tiny_cnn")
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 80).tolist()
    rgbs = _write_images(root, 80, labels, seed=1)
    encoder = create_encoder("tiny_cnn")
    vecs = embed_arrays(encoder, rgbs)
    syn = make_synthetic(
        db,
        model="tiny_cnn",
        dim=config.dim,
        n=80,
        root=str(root),
        vectors=vecs,
        config_hash=config.config_hash(),
        config=config.to_json(),
    )
    with psycopg.connect(db) as conn:
        for image_id, rgb in zip(syn.ids, rgbs, strict=True):
            conn.execute("update cbir.image set content_hash = %s where id = %s", (pixel_hash(rgb), image_id))
    return syn, root, encoder


def test_new_file_is_embedded_with_the_same_encoder(db: str, tiny, tmp_path: Path, conn):
    from cbir_pg.encoders import embed_arrays

    syn, _, encoder = tiny
    new = np.clip(np.mgrid[0:40, 0:40][1] * 6 + 7, 0, 255).astype(np.uint8)
    Image.fromarray(new, "L").save(tmp_path / "new.png")
    query, hits = search_with_query(Database(db), "tiny_cnn", path=tmp_path / "new.png", k=6)
    assert query.embedded_on_the_fly and query.image_id is None
    vec = embed_arrays(encoder, [np.repeat(new[:, :, None], 3, axis=2)])[0]
    expected = conn.execute(
        "select image_id, similarity from cbir.similar_to_vector(%s, 'tiny_cnn', 6)", (vec,)
    ).fetchall()
    assert [(h.image_id, pytest.approx(h.similarity, abs=1e-5)) for h in hits] == expected

    # a copy of a stored image elsewhere is recognised by its pixels and uses the stored vector
    shutil.copy(tiny[1] / "img" / "5.png", tmp_path / "copy.png")
    query, hits = search_with_query(Database(db), "tiny_cnn", path=tmp_path / "copy.png", k=3)
    assert query.image_id == syn.ids[5] and not query.embedded_on_the_fly
    assert syn.ids[5] not in [h.image_id for h in hits]


def test_new_file_refused_when_config_hash_differs(db: str, tiny, tmp_path: Path, conn):
    conn.execute("update cbir.encoder set config_hash = 'made-with-another-config' where key = 'tiny_cnn'")
    conn.commit()
    Image.fromarray(np.full((32, 32), 99, np.uint8), "L").save(tmp_path / "new.png")
    with pytest.raises(ConfigError, match="config"):
        search(Database(db), "tiny_cnn", path=tmp_path / "new.png", k=3)


def test_encoder_is_built_once_and_kept_between_file_queries(db: str, tiny, tmp_path: Path, caplog):
    """A process that embeds query after query (the page's uploads) builds the encoder once: one log
    line, the same object every time; at most MAX_LOADED encoders are kept."""
    import logging

    from cbir_pg.encoders import loaded

    loaded.forget_encoders()
    for i in range(3):
        new = np.clip(np.mgrid[0:40, 0:40][1] * (3 + i) + 7, 0, 255).astype(np.uint8)
        Image.fromarray(new, "L").save(tmp_path / f"new{i}.png")
    with caplog.at_level(logging.INFO, logger="cbir_pg.encoders"):
        for i in range(3):
            query, hits = search_with_query(Database(db), "tiny_cnn", path=tmp_path / f"new{i}.png", k=4)
            assert query.embedded_on_the_fly and len(hits) == 4
    built = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded encoder")]
    assert len(built) == 1 and built[0].startswith("loaded encoder tiny_cnn (config ")
    assert loaded.loaded_keys() == ["tiny_cnn"]
    first = loaded.loaded_encoder("tiny_cnn")
    assert loaded.loaded_encoder("tiny_cnn") is first
    vit = loaded.loaded_encoder("tiny_vit")
    assert loaded.loaded_encoder("tiny_cnn") is first  # now the most recently used
    assert loaded.loaded_keys() == ["tiny_vit", "tiny_cnn"]
    loaded.loaded_encoder("tiny_vit", pretrained=False, seed=3)  # a third: the least recent goes
    assert loaded.loaded_keys() == ["tiny_cnn", "tiny_vit"] and len(loaded.loaded_keys()) == loaded.MAX_LOADED
    assert loaded.loaded_encoder("tiny_cnn") is first and loaded.loaded_encoder("tiny_vit") is not vit
    loaded.forget_encoders()
    assert loaded.loaded_keys() == []
