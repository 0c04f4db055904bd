"""``cbir-pg datasets``: import a dataset with one command, list what is imported."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import console, database
from cbir_pg.app.cli.output import Col, Format, emit, format_option, print_line

app = typer.Typer(
    help="Datasets: import public or own data (one adapter per source layout), list counts.",
    no_args_is_help=True,
)


def _parse_options(items: list[str] | None) -> dict[str, str]:
    from cbir_pg.errors import ConfigError

    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


# one piece: typer declares its options in the signature
@app.command("import")
def import_(
    ctx: typer.Context,
    kind: str = typer.Argument(
        ...,
        help="adapter: radimagenet, nih14, chexpert, mimic-cxr, covidx, medmnist, "
        "imagefolder, csv, dicom, dkfz-splits, dicomweb",
    ),
    root: str = typer.Argument(
        ..., help="the dataset folder or file as the provider publishes it; dicomweb: the PACS's DICOMweb URL"
    ),
    name: str = typer.Option(
        None, "--name", help="dataset key (default: per adapter, e.g. the MedMNIST flag)"
    ),
    label_map: Path = typer.Option(
        None, "--label-map", help="CSV or YAML: source_label -> harmonised label [, kind]"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the patient-wise splits"),
    flag: str = typer.Option(None, "--flag", help="medmnist: the MedMNIST dataset, e.g. breastmnist"),
    uncertain: str = typer.Option(
        None,
        "--uncertain",
        help="chexpert/mimic-cxr: zeros (default), ones or exclude (the paper's CheXpert rule)",
    ),
    modality: str = typer.Option(
        None,
        "--modality",
        help="imagefolder/csv: modality code, e.g. XR; dicomweb: only these, e.g. CT,CR,DX",
    ),
    study_date: str = typer.Option(
        None, "--study-date", help="dicomweb: StudyDate range FROM-TO (YYYYMMDD-YYYYMMDD, open ends allowed)"
    ),
    study_uid: list[str] = typer.Option(
        None, "--study-uid", help="dicomweb: only these Study Instance UIDs (repeatable or comma-separated)"
    ),
    since: str = typer.Option(
        None, "--since", help="dicomweb: 'last' continues from the last complete run, or a date YYYYMMDD"
    ),
    no_copy: bool = typer.Option(
        False,
        "--no-copy",
        help="dicomweb: store only a reference per instance (no pixels); fetched from the PACS when used",
    ),
    keep_paths: bool = typer.Option(
        False,
        "--keep-paths",
        help="dicom: store the source paths and root as they are (default: a managed copy, no names stored)",
    ),
    region: str = typer.Option(None, "--region", help="imagefolder/csv: anatomical region, e.g. chest"),
    option: list[str] = typer.Option(
        None, "--option", "-o", help="other adapter option KEY=VALUE (repeatable)"
    ),
    hash_images: bool = typer.Option(
        True, "--hash/--no-hash", help="decode and pixel-hash for dedupe (--no-hash: huge imports)"
    ),
    managed_copy: bool = typer.Option(
        False,
        "--managed-copy",
        help="dicom: copy the pixels into the managed store (the default; kept for compatibility)",
    ),
    allow_outside_root: bool = typer.Option(
        False,
        "--allow-outside-root",
        help="import manifest paths that are absolute or leave the dataset root (../); refused by default",
    ),
    profile: str = typer.Option(
        "default",
        "--profile",
        help="default, or paper: no dedupe, CheXpert uncertain excluded (see docs/reproduce.md)",
    ),
    dedupe: str = typer.Option(
        None, "--dedupe", help="near (exact + perceptual; default), exact or none (paper profile: none)"
    ),
    metadata_only: bool = typer.Option(
        False,
        "--metadata-only",
        help="dkfz-splits: labels, splits, patients from the CSVs only; no image file read (pixels not available)",
    ),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", "-q", help="no progress bar"),
) -> None:
    """Import one dataset; re-running it adds nothing twice."""
    opts = _adapter_options(option, flag=flag, uncertain=uncertain, modality=modality, region=region)
    opts.update(_copy_options(managed_copy=managed_copy, keep_paths=keep_paths))
    run, args = _importer(
        kind, root, opts, study_date=study_date, study_uid=study_uid, since=since, no_copy=no_copy
    )
    s = run(
        database(ctx),
        *args,
        name=name,
        label_map=label_map,
        seed=seed,
        progress=not quiet,
        hash_images=hash_images,
        allow_outside_root=allow_outside_root,
        profile=profile,
        dedupe=dedupe,
        metadata_only=metadata_only,
        **opts,
    )
    _print_summary(s, metadata_only)


def _adapter_options(items: list[str] | None, **named: str | None) -> dict:
    """The adapter's own options: ``--option KEY=VALUE`` items, then the named ones that were given."""
    opts: dict = _parse_options(items)
    opts.update({k: v for k, v in named.items() if v is not None})
    return opts


def _copy_options(**flags: bool) -> dict:
    """The dicom adapter's copy switches, passed on only when set (as the adapters' text options)."""
    return {k: "1" for k, on in flags.items() if on}


def _importer(kind: str, root: str, opts: dict, *, study_date, study_uid, since, no_copy) -> tuple:
    """The import function and its positional arguments: the PACS import (which keeps its --since cursor
    around the importer; its own options are added to ``opts``) for dicomweb, else
    :func:`cbir_pg.datasets.import_dataset` of ``kind``, where the PACS options are refused."""
    from cbir_pg.errors import ConfigError

    if kind == "dicomweb":
        from cbir_pg.app.cli._common import split_names
        from cbir_pg.pacs.dicomweb import import_dicomweb

        opts.update(study_date=study_date, study_uid=",".join(split_names(study_uid)) or None, since=since)
        opts["no_copy"] = no_copy
        return import_dicomweb, (root,)
    if study_date or study_uid or since or no_copy:
        raise ConfigError(
            "--study-date, --study-uid, --since and --no-copy are options of: datasets import dicomweb URL"
        )
    from cbir_pg.datasets import import_dataset

    return import_dataset, (kind, root)


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))


def _print_summary(s, metadata_only: bool) -> None:
    """What the import added, its splits, duplicates, exclusions and errors, and a crossing warning."""
    console.print(
        f"dataset [bold]{s.dataset}[/] ({s.kind}): {s.imported} new images, {s.skipped_existing} already "
        f"present, {s.error_count} errors, {s.images} images / {s.patients} patients in total "
        f"({s.seconds:.1f} s)"
    )
    console.print("splits: " + _counts(s.splits))
    if metadata_only:
        console.print("metadata only: no image file read; pixels not available for these images")
    if s.hashed:
        console.print(
            f"duplicates: {s.exact_duplicates} exact, {s.near_duplicates} near (flagged, not deleted)"
        )
    if s.excluded:
        console.print("excluded: " + _counts(s.excluded))
    if s.errors:
        console.print("errors (see cbir.error): " + _counts(s.errors))
    if s.patients_crossing_splits:
        console.print(
            f"[yellow]warning:[/] {s.patients_crossing_splits} patients have images in several splits"
        )


@app.command("list")
def list_(ctx: typer.Context, fmt: Format = format_option()) -> None:
    """Per dataset: images by split, by benchmark label and by exclusion reason. JSON: one object per
    dataset; CSV: one line per dataset and count (long format)."""
    from cbir_pg.datasets import dataset_overview

    rows = dataset_overview(database(ctx))
    counts = [
        {"dataset": d.key, "by": by, "value": k, "images": v}
        for d in rows
        for by, values in (("split", d.splits), ("label", d.labels), ("excluded", d.exclusions))
        for k, v in sorted(values.items())
    ]
    if fmt == Format.json:
        keys = ("key", "kind", "name", "root", "imported_at", "images", "excluded", "patients", "errors")
        keys += ("splits", "labels", "exclusions")
        emit(rows, [Col(k) for k in keys], fmt)
        return
    cols = [Col("dataset"), Col("by"), Col("value"), Col("images", right=True)]
    if fmt == Format.csv:
        emit(counts, cols, fmt)
        return
    if not rows:
        print_line("no datasets imported yet: cbir-pg datasets import KIND ROOT")
    for d in rows:
        print_line(
            f"{d.key} ({d.kind}): {d.images} images, {d.excluded} excluded, {d.patients} patients, "
            f"{d.errors} import errors; root {d.root}"
            + (
                " (import unfinished: rerun the import; evaluation refuses it)"
                if d.import_status != "complete"
                else ""
            )
        )
        emit([c for c in counts if c["dataset"] == d.key], cols[1:], fmt)


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="datasets")


# ``datasets dedupe`` (cross-split near-duplicate pairs) joins this group.
from cbir_pg.app.cli import dedupe as _dedupe  # noqa: E402

_dedupe.register_datasets(app)
