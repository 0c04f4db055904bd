"""``cbir-pg search``: the most similar cases to an image file or a stored image."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import check_split, database, err_console
from cbir_pg.app.cli.options import ModelKey
from cbir_pg.app.cli.output import Col, Format, emit, format_option, print_line


def search(
    ctx: typer.Context,
    path: Path = typer.Argument(None, help="query image file (embedded on the fly when not in the database)"),
    image_id: int = typer.Option(None, "--image-id", help="query by a stored image's id instead of a file"),
    text: str = typer.Option(
        None, "--text", help="query by a description (image-text models only, e.g. biomedclip, clip_vitl14)"
    ),
    weights: Path = typer.Option(
        None, "--weights", help="checkpoint of the model's text tower (with --text)"
    ),
    model: ModelKey = ...,
    k: int = typer.Option(10, "-k", "--k", min=1, help="number of neighbours"),
    split: str = typer.Option(
        None, "--split", callback=check_split, help="only neighbours from this split (train, val, test)"
    ),
    dataset: str = typer.Option(None, "--dataset", help="only neighbours from this dataset key"),
    modality: str = typer.Option(None, "--modality", help="only neighbours of this modality"),
    label: str = typer.Option(
        None, "--label", help="only neighbours with this label key, e.g. XR/chest/pneumonia"
    ),
    sex: str = typer.Option(None, "--sex", help="only neighbours of patients of this sex (F, M, O)"),
    age_min: float = typer.Option(None, "--age-min", help="only neighbours of patients at least this old"),
    age_max: float = typer.Option(None, "--age-max", help="only neighbours of patients at most this old"),
    exclude_same_patient: bool = typer.Option(
        False, "--exclude-same-patient/--include-same-patient", help="leave out the query's patient"
    ),
    same_patient: bool = typer.Option(False, "--same-patient", help="only the query's own patient's images"),
    saved: str = typer.Option(None, "--cohort", help="only images of this saved cohort (cbir.cohort)"),
    ef_search: int = typer.Option(
        None, "--ef-search", help="HNSW search breadth (raised to at least k anyway)"
    ),
    png: Path = typer.Option(None, "--png", help="write a Fig. 2 style grid PNG here"),
    fmt: Format = format_option(),
) -> None:
    """Show the k most similar cases: rank, image, label, dataset, similarity, patient sex and age.

    --text "right pleural effusion" searches by a description with the model's own text tower."""
    from cbir_pg.cohort import as_cohort
    from cbir_pg.errors import ConfigError

    if sum(x is not None for x in (path, image_id, text)) != 1:
        raise ConfigError("give an image file, --image-id or --text (one of them)")
    among = as_cohort(
        split=split,
        dataset=dataset,
        modality=modality,
        label=label,
        sex=sex,
        age_min=age_min,
        age_max=age_max,
        exclude_same_patient=exclude_same_patient,
        same_patient=same_patient,
        cohort=saved,
    )
    if text is not None:
        _by_text(database(ctx), model, text, k, among, ef_search=ef_search, weights=weights, png=png, fmt=fmt)
    else:
        _by_image(database(ctx), model, image_id, path, k, among, ef_search=ef_search, png=png, fmt=fmt)


def _by_text(db, model: str, text: str, k: int, among, *, ef_search, weights, png, fmt: Format) -> None:
    """``--text``: the model's text tower embeds the description; a note says whose image vectors it meets."""
    from cbir_pg.app.cli.output import say
    from cbir_pg.errors import ConfigError
    from cbir_pg.search import search_text, text_search_note

    if among.relative_to_query or png is not None:
        raise ConfigError("--exclude-same-patient, --same-patient and --png need an image query, not --text")
    hits = search_text(db, model, text, k=k, cohort=among, ef_search=ef_search, weights=weights)
    if fmt == Format.table:
        print_line(f"query: text {text!r}, model {model}")
    note = None if weights is not None else text_search_note(db, model)
    if note:
        say(note, fmt)
    _emit_hits(hits, k, fmt)


def _by_image(db, model: str, image_id, path, k: int, among, *, ef_search, png, fmt: Format) -> None:
    """A stored image or a file (embedded on the fly when new); ``--png`` also writes the grid."""
    from cbir_pg.search import search_with_query, write_search_grid

    query, hits = search_with_query(
        db, model, image_id=image_id, path=path, k=k, cohort=among, ef_search=ef_search
    )
    what = f"image {query.image_id}" if query.image_id is not None else str(query.path)
    extra = " (embedded on the fly)" if query.embedded_on_the_fly else ""
    if fmt == Format.table:
        print_line(f"query: {what}{extra}, label {query.label or 'unknown'}, model {model}")
    _emit_hits(hits, k, fmt)
    if png is not None:
        out = write_search_grid(db, query, hits, png)
        err_console.print(f"wrote {out}", markup=False, highlight=False)


def _emit_hits(hits, k: int, fmt: Format) -> None:
    cols = [
        Col("rank", right=True),
        Col("image_id", right=True, header="image"),
        Col("uri"),
        Col("label"),
        Col("dataset"),
        Col("similarity", fmt=lambda x: f"{x:.4f}", right=True),
        Col("sex"),
        Col("age", fmt=lambda a: f"{a:.0f}", right=True),
    ]
    notes = [f"only {len(hits)} images match (asked for {k})"] if len(hits) < k else []
    emit(hits, cols, fmt, notes=notes, empty="no image matches")


def register(app: typer.Typer) -> None:
    app.command(name="search")(search)
