"""Similar-case search, the Python side: find the query's vector (stored, or a new file embedded on the
fly with the same encoder config), call ``cbir.similar_images`` / ``cbir.similar_to_vector`` with label,
dataset and patient joined in, and draw the paper's Fig. 2 style grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from cbir_pg.cohort import Cohort, as_cohort
from cbir_pg.db import identifiers, queries
from cbir_pg.db.connect import translate
from cbir_pg.db.database import Database, db_errors, dict_cursor, scalar
from cbir_pg.errors import CbirError, ConfigError, NotFoundError
from cbir_pg.rules import check_ef_search

#: frame colours of the grid (RGB): the query, a neighbour with the query's label, one without
ORANGE = (255, 140, 0)
GREEN = (34, 177, 76)
RED = (220, 30, 30)
GREY = (150, 150, 150)


@dataclass(frozen=True)
class Hit:
    rank: int
    image_id: int
    similarity: float
    label: str | None
    dataset: str
    uri: str
    split: str | None
    modality: str | None
    patient_id: int | None
    sex: str | None
    age: float | None


@dataclass(frozen=True)
class QueryImage:
    """What is known about the query: a stored image (``image_id`` set) or a new file."""

    image_id: int | None
    path: Path | None
    label: str | None = None
    dataset: str | None = None
    sex: str | None = None
    age: float | None = None
    embedded_on_the_fly: bool = False


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")


def check_cohort(conn: psycopg.Connection, cohort: Cohort, query_image_id: int | None = None) -> None:
    """Validate ``cohort`` in the database (``cbir.resolve_cohort``, the one validation) without searching."""
    conn.execute(queries.get("search", "check_cohort"), {"cohort": cohort.sql(), "image_id": query_image_id})


def _sql_error(exc: psycopg.Error) -> CbirError:
    """The SQL API's own errors (unknown model or image, bad filter) as the project's error types."""
    msg = (exc.diag.message_primary if exc.diag else None) or str(exc).splitlines()[0]
    if isinstance(exc, psycopg.errors.NoDataFound):
        return NotFoundError(msg)
    if isinstance(exc, psycopg.errors.InvalidParameterValue | psycopg.errors.InvalidTextRepresentation):
        return ConfigError(msg)
    return translate(exc)


def _rows_to_hits(rows) -> list[Hit]:
    return [
        Hit(
            rank=int(r["rank"]),
            image_id=int(r["image_id"]),
            similarity=float(r["similarity"]),
            label=r["label"],
            dataset=r["dataset"],
            uri=r["uri"],
            split=r["split"],
            modality=r["modality"],
            patient_id=r["patient_id"],
            sex=r["sex"],
            age=float(r["age"]) if r["age"] is not None else None,
        )
        for r in rows
    ]


def search(db: Database, model: str, **query: Any) -> list[Hit]:
    """The k most similar images of a cohort to a stored image (``image_id``) or an image file (``path``).

    The cohort is ``cohort`` plus any keyword filters (:func:`cbir_pg.cohort.as_cohort`: ``split``,
    ``dataset``, ``modality``, ``label``, ``sex``, ``age_min``, ``age_max``, ``patient``,
    ``exclude_same_patient``, ``same_patient``, ``image_ids``, ``cohort`` ...); the SQL function filters
    natively and returns exactly k rows when k images of the cohort exist.

    A file that is already in the database (same path under a dataset root, or same decoded pixels) uses
    its stored vector and is left out of its own results; any other file is embedded on the fly with
    the model's encoder, whose config hash must match the one the stored vectors were made with.
    ``ef_search`` raises ``hnsw.ef_search`` for this query (the SQL function already lifts it to ≥ k).
    The arguments are :func:`search_with_query`'s (``image_id`` or ``path``, ``k``, ``cohort``,
    ``ef_search`` and the keyword filters).
    """
    return search_with_query(db, model, **query)[1]


def search_with_query(
    db: Database,
    model: str,
    *,
    image_id: int | None = None,
    path: str | Path | None = None,
    k: int = 10,
    cohort: Cohort | str | None = None,
    ef_search: int | None = None,
    **filters: Any,
) -> tuple[QueryImage, list[Hit]]:
    """:func:`search`, also returning what is known about the query (its label for the grid's frames)."""
    identifiers.check_key(model)
    _check_k(k)
    cohort = as_cohort(cohort, **filters)
    if (image_id is None) == (path is None):
        raise ConfigError("give exactly one of an image id or an image file")
    check_ef_search(ef_search)
    params = {"model": model, "k": k, "cohort": cohort.sql()}
    conn = db.connect()
    with db_errors(using=_sql_error), conn:
        if conn.execute(queries.get("search", "encoder_row"), {"model": model}).fetchone() is None:
            from cbir_pg.encoders.registry import model_not_stored

            raise model_not_stored(model)
        if ef_search is not None:
            conn.execute(queries.get("search", "set_ef_search"), {"value": str(ef_search)})
        vec = None
        if path is not None:
            found, rgb = _find_stored(conn, model, Path(path))
            if found is None:
                if cohort.relative_to_query:
                    raise ConfigError(
                        f"a patient filter relative to the query (patient: {cohort.patient}) needs a stored"
                        " query image; a new file has none"
                    )
                check_cohort(conn, cohort)  # a bad filter fails before the encoder loads
                vec = _embed_file(conn, model, rgb, Path(path))
            image_id = found
        if image_id is not None:
            info = conn.execute(queries.get("search", "image_info"), {"image_id": image_id}).fetchone()
            if info is None:
                raise NotFoundError(f"image {image_id} does not exist")
            query = QueryImage(
                image_id,
                Path(path) if path else None,
                info["label"],
                info["dataset"],
                info["sex"],
                info["age"],
            )
            rows = conn.execute(
                queries.get("search", "similar_images"), {**params, "image_id": image_id}
            ).fetchall()
        else:
            query = QueryImage(None, Path(path), embedded_on_the_fly=True)
            rows = conn.execute(queries.get("search", "similar_to_vector"), {**params, "vec": vec}).fetchall()
        conn.rollback()  # read-only; this also ends the transaction-local ef_search
    return query, _rows_to_hits(rows)


def _find_stored(conn: psycopg.Connection, model: str, path: Path) -> tuple[int | None, np.ndarray]:
    """A file that is a stored image with a vector: by path under a dataset root, else by pixel hash."""
    from cbir_pg.images import decode_file, pixel_hash

    rgb = decode_file(path)
    table = identifiers.embedding_table(model)
    p = path.resolve()
    from cbir_pg.roots import local_root

    for root in [r["root"] for r in dict_cursor(conn).execute(queries.get("search", "dataset_roots"))]:
        try:
            rel = p.relative_to(Path(local_root(root)).resolve())
        except (ValueError, OSError):
            continue
        found = scalar(
            conn, queries.get("search", "find_by_uri", table=table), {"root": root, "uri": rel.as_posix()}
        )
        if found is not None:
            return int(found), rgb
    found = scalar(
        conn, queries.get("search", "find_by_content_hash", table=table), {"hash": pixel_hash(rgb)}
    )
    return (int(found) if found is not None else None), rgb


def _embed_file(conn: psycopg.Connection, model: str, rgb: np.ndarray, path: Path) -> np.ndarray:
    """Embed a new file with the encoder config the model's stored vectors were made with."""
    from cbir_pg.encoders import embed_arrays

    return embed_arrays(stored_encoder(conn, model, path), [rgb])[0]


def stored_encoder(conn: psycopg.Connection, model: str, path: Path | None = None, *, device: str = "cpu"):
    """The encoder whose config the model's stored vectors were made with (the installed pretrained
    one, or the seeded random one a test database was filled with), built once per process
    (:func:`cbir_pg.encoders.loaded.loaded_encoder`). ``path`` names the query in error messages."""
    what = str(path) if path is not None else "a query"
    row = dict_cursor(conn).execute(queries.get("search", "encoder_row"), {"model": model}).fetchone()
    if row is None:
        from cbir_pg.encoders.registry import model_not_stored

        raise model_not_stored(model)
    stored_hash = row["config_hash"]
    stored_config = row["config"] or {}
    try:
        from cbir_pg.encoders import get_config
        from cbir_pg.encoders.loaded import loaded_encoder
    except ImportError as exc:  # pragma: no cover - the encoders package ships with cbir-pg
        raise ConfigError(f"cannot embed {what}: encoders unavailable ({exc})") from None
    config = get_config(model)
    kwargs: dict[str, object] = {}
    if config.config_hash() != stored_hash:
        source = str(stored_config.get("weights_source", "")) if isinstance(stored_config, dict) else ""
        seed = None
        if source.startswith("random:seed="):
            try:
                seed = int(source.split("=", 1)[1])
            except ValueError:
                seed = None
        if seed is None or config.as_random(seed).config_hash() != stored_hash:
            raise ConfigError(
                f"cannot embed {what} for {model}: the stored vectors were made with encoder config "
                f"{stored_hash[:12]}, this installation's {model} config is {config.config_hash()[:12]}"
            )
        kwargs = {"pretrained": False, "seed": seed}
    encoder = loaded_encoder(model, device=device, **kwargs)
    if encoder.config.config_hash() != stored_hash:
        raise ConfigError(f"encoder config hash mismatch for {model}")
    return encoder


IMPORTED_TEXT_NOTE = (
    "the {model} image vectors are imported (published HDF5) and declare this installation's {model} model"
    " and preprocessing (config {hash}): this model's text tower queries them"
)


def check_stored_config(
    conn: psycopg.Connection, model: str, weights: str | Path | None = None
) -> str | None:
    """The model's stored image vectors must come from this installation's encoder config (the text
    tower shares the image tower's weights, so a text vector only makes sense against those).

    Imported vectors (``embeddings import-h5``) qualify when they declare the same model and the same
    preprocessing: their config is this installation's config with only the import provenance added
    (:func:`cbir_pg.encoders.config.imported_config`), so its hash equals that config's hash. The paper's
    preprocessing is the library processor of each model, which the registered configs follow (tested,
    docs/models.md). Returns a note saying so for imported vectors, else ``None``."""
    row = dict_cursor(conn).execute(queries.get("search", "encoder_row"), {"model": model}).fetchone()
    if row is None:
        from cbir_pg.encoders.registry import model_not_stored

        raise model_not_stored(model)
    from cbir_pg.encoders import get_config

    config = get_config(model)
    stored_hash = row["config_hash"]
    if weights is None:
        from cbir_pg.encoders.config import imported_config

        imported = imported_config(config).config_hash()
        if stored_hash == imported and imported != config.config_hash():
            return IMPORTED_TEXT_NOTE.format(model=model, hash=stored_hash[:12])
    if weights is None and config.config_hash() != stored_hash:
        raise ConfigError(
            f"the stored {model} vectors were made with encoder config {stored_hash[:12]}, this installation's "
            f"{model} config is {config.config_hash()[:12]}: text and image vectors would not match"
        )
    return None


def search_text(
    db: Database,
    model: str,
    text: str,
    *,
    k: int = 10,
    cohort: Cohort | str | None = None,
    ef_search: int | None = None,
    weights: str | Path | None = None,
    **filters: Any,
) -> list[Hit]:
    """Text-to-image search: embed ``text`` with the model's own tokenizer and text tower
    (:mod:`cbir_pg.encoders.text`), then ``cbir.similar_to_vector`` against its stored image vectors
    (computed here, or imported ones that declare the same model and preprocessing:
    :func:`check_stored_config`; :func:`text_search_note` says which). A model without a text tower is
    refused with one line before anything is loaded."""
    from cbir_pg.encoders.text import check_text_tower, create_text_encoder, embed_texts

    identifiers.check_key(model)
    _check_k(k)
    cohort = as_cohort(cohort, **filters)
    check_text_tower(model)
    check_ef_search(ef_search)
    conn = db.connect()
    with db_errors(using=_sql_error), conn:
        check_stored_config(conn, model, weights)
        check_cohort(conn, cohort)
        vec = embed_texts(create_text_encoder(model, weights=weights), [text])[0]
        if ef_search is not None:
            conn.execute(queries.get("search", "set_ef_search"), {"value": str(ef_search)})
        rows = conn.execute(
            queries.get("search", "similar_to_vector"),
            {"model": model, "k": k, "cohort": cohort.sql(), "vec": vec},
        ).fetchall()
        conn.rollback()  # read-only; this also ends the transaction-local ef_search
    return _rows_to_hits(rows)


def text_search_note(db: Database, model: str) -> str | None:
    """What :func:`search_text` will say about the vectors it queries: a note for imported vectors
    that declare this installation's model and preprocessing, ``None`` for computed ones."""
    with db.connection() as conn:
        return check_stored_config(conn, model)


PIXELS_NOT_AVAILABLE = "pixels not available"


class PixelsNotAvailable(NotFoundError):
    """The image was imported with ``--metadata-only``: its file is not on this machine."""

    def __init__(self, image_id: int):
        super().__init__(f"image {image_id}: {PIXELS_NOT_AVAILABLE} (imported with --metadata-only)")
        self.image_id = image_id


def placeholder_rgb(side: int = 128, text: str = PIXELS_NOT_AVAILABLE) -> np.ndarray:
    """A grey square that says ``text``: drawn where an image has no local pixels."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGB", (side, side), (200, 200, 200))
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    y = side // 2 - 12
    for line in text.replace(" not ", "\nnot ").split("\n"):
        w = draw.textlength(line, font=font)
        draw.text(((side - w) / 2, y), line, fill=(60, 60, 60), font=font)
        y += 12
    return np.asarray(im)


def image_rgb_or_placeholder(db_or_conn: Database | psycopg.Connection, image_id: int) -> np.ndarray:
    """:func:`load_image_rgb`, or :func:`placeholder_rgb` for an image without local pixels."""
    try:
        return load_image_rgb(db_or_conn, image_id)
    except PixelsNotAvailable:
        return placeholder_rgb()


def load_image_rgb(db_or_conn: Database | psycopg.Connection, image_id: int) -> np.ndarray:
    """Decode a stored image (``dataset.root`` / ``image.uri``) to RGB ``uint8``, through the guarded
    reader: its pixels must be those recorded at import (:func:`cbir_pg.images.read_image`)."""
    from cbir_pg.images import read_image

    def fetch(conn: psycopg.Connection):
        return (
            dict_cursor(conn).execute(queries.get("search", "image_info"), {"image_id": image_id}).fetchone()
        )

    if isinstance(db_or_conn, psycopg.Connection):
        row = fetch(db_or_conn)
    else:
        with db_or_conn.connection(vector=False) as conn:
            row = fetch(conn)
    if row is None:
        raise NotFoundError(f"image {image_id} does not exist")
    if not row["local_pixels"]:
        raise PixelsNotAvailable(image_id)
    from cbir_pg.roots import local_root

    uri, root = row["uri"], local_root(row["root"])
    return read_image(Path(root) / uri if root else Path(uri), row.get("content_hash"))[0]


def _fit_tile(rgb: np.ndarray, tile: int) -> np.ndarray:
    """Resize to fit a ``tile`` x ``tile`` square (aspect kept), centred on black."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).convert("RGB")
    scale = tile / max(im.size)
    im = im.resize(
        (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR
    )
    canvas = Image.new("RGB", (tile, tile), (0, 0, 0))
    canvas.paste(im, ((tile - im.width) // 2, (tile - im.height) // 2))
    return np.asarray(canvas)


def draw_grid(
    query_rgb: np.ndarray,
    neighbour_rgbs: list[np.ndarray],
    matches: list[bool],
    path: str | Path,
    captions: list[str] | None = None,
    tile: int = 128,
) -> Path:
    """Write the paper's Fig. 2 style row: the query framed orange, then the neighbours, each framed
    green where its label matches the query's and red where it does not (``None``: grey, unknown).

    The image is one row of ``1 + len(neighbour_rgbs)`` cells, each ``tile + 2*border`` wide with a
    ``gap`` between cells; ``captions`` (one for the query, then one per neighbour, or one per neighbour
    only) are written under the cells. Returns the path written.
    """
    from PIL import Image, ImageDraw, ImageFont

    if len(matches) != len(neighbour_rgbs):
        raise ConfigError(f"{len(neighbour_rgbs)} neighbours but {len(matches)} match flags")
    if captions is not None and len(captions) == len(neighbour_rgbs):
        captions = ["query", *captions]
    if captions is not None and len(captions) != len(neighbour_rgbs) + 1:
        raise ConfigError("captions: give one per neighbour, or one for the query and one per neighbour")
    b, gap = grid_border(tile), grid_gap(tile)
    cell = tile + 2 * b
    caption_h = 0
    font = ImageFont.load_default()
    if captions:
        lines = max(len(c.split("\n")) for c in captions)
        caption_h = lines * 12 + 6
    n = 1 + len(neighbour_rgbs)
    width = n * cell + (n - 1) * gap
    out = Image.new("RGB", (width, cell + caption_h), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    colours = [ORANGE] + [GREY if m is None else (GREEN if m else RED) for m in matches]
    for i, (rgb, colour) in enumerate(zip([query_rgb, *neighbour_rgbs], colours, strict=True)):
        x = i * (cell + gap)
        draw.rectangle([x, 0, x + cell - 1, cell - 1], fill=colour)
        out.paste(Image.fromarray(_fit_tile(rgb, tile)), (x + b, b))
        if captions:
            text = _shorten(captions[i], cell, font, draw)
            draw.multiline_text((x + 2, cell + 3), text, fill=(0, 0, 0), font=font, spacing=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


def grid_border(tile: int) -> int:
    return max(3, tile // 24)


def grid_gap(tile: int) -> int:
    return max(4, tile // 16)


def grid_size(n_neighbours: int, tile: int = 128, captions: int = 0) -> tuple[int, int]:
    """``(width, height)`` of :func:`draw_grid`'s image for ``n_neighbours`` and ``captions`` caption lines."""
    cell = tile + 2 * grid_border(tile)
    n = 1 + n_neighbours
    return n * cell + (n - 1) * grid_gap(tile), cell + (captions * 12 + 6 if captions else 0)


def _shorten(text: str, width: int, font, draw) -> str:
    out = []
    for line in text.split("\n"):
        while line and draw.textlength(line, font=font) > width - 4:
            line = line[:-2] + "…" if len(line) > 2 else ""
            if line.endswith("……"):
                line = line[:-2] + "…"
        out.append(line)
    return "\n".join(out)


def hit_caption(hit: Hit) -> str:
    """``#rank label`` / ``sim 0.93`` / ``F 54y``: the caption :func:`draw_grid` shows under a neighbour."""
    who = " ".join(x for x in (hit.sex or "", f"{hit.age:.0f}y" if hit.age is not None else "") if x)
    label = (hit.label or "no label").split("/")[-1]
    return f"#{hit.rank} {label}\nsim {hit.similarity:.3f}" + (f"\n{who}" if who else "")


def write_search_grid(
    db: Database, query: QueryImage, hits: list[Hit], path: str | Path, *, tile: int = 128
) -> Path:
    """The grid for a search result: query pixels from its file or the database, neighbours from theirs
    (a grey "pixels not available" tile for an image imported with ``--metadata-only``)."""
    from cbir_pg.images import decode_file

    if query.path is not None:
        query_rgb = decode_file(query.path)
    else:
        query_rgb = image_rgb_or_placeholder(db, query.image_id)
    with db.connection(vector=False) as conn:
        neighbours = [image_rgb_or_placeholder(conn, h.image_id) for h in hits]
    matches: list[bool] = [None if query.label is None else h.label == query.label for h in hits]  # type: ignore[misc]
    qlabel = (query.label or "unknown").split("/")[-1]
    captions = [f"query\n{qlabel}"] + [hit_caption(h) for h in hits]
    return draw_grid(query_rgb, neighbours, matches, path, captions=captions, tile=tile)
