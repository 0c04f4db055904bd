"""Writers of tiny datasets in the layouts their providers publish (real column headers, a few rows,
tiny images), for the import tests and for anyone else who needs a small imported dataset.

Every image is an 8x8 greyscale PNG whose pixels come from a seed, so two images share pixels only
where a writer means them to (``img(path, seed)`` with the same seed).

Also the database side of hand-made test data: an encoder's vectors (:func:`store_vectors`) and
evaluation runs with their metrics (:func:`store_eval_run`, :func:`store_metrics`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cbir_pg.datasets.chexpert import CHEXPERT_FINDINGS


def img(path: Path, seed: int, size: int = 8) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_radimagenet(root: Path) -> Path:
    """RadiologyAI_{train,val,test}.csv + CT/MR/US folders; 7 rows: 1 missing file, 1 exact duplicate."""
    files = {
        "train": [
            "CT/abd/normal/abd001.png",
            "CT/abd/acute_pancreatitis/abd002.png",
            "US/kidney/us001.png",
            "MR/knee/acl_pathology/knee01.png",
        ],
        "val": ["US/thyroid_nodule/us002.png"],
        "test": ["CT/abd/normal/abd003.png", "CT/abd/normal/missing.png"],
    }
    seeds = {"abd001": 1, "abd002": 2, "us001": 3, "knee01": 4, "us002": 5, "abd003": 1}  # abd003 = abd001
    for split, names in files.items():
        write_csv(
            root / f"RadiologyAI_{split}.csv",
            ["filename", "label"],
            [[n, n.rsplit("/", 1)[0].replace("/", "-")] for n in names],
        )
        for n in names:
            stem = Path(n).stem
            if stem in seeds:
                img(root / "radiology_ai" / n, seeds[stem])
    return root


NIH_HEADER = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
]


def write_nih14(root: Path, n_patients: int = 12) -> Path:
    """Data_Entry_2017.csv, train_val_list.txt, test_list.txt, images_001/images/*.png.

    Patients 1..n each have two images; patient 1's second image is multi-label; patients 11 and 12
    are the test list. One row names a missing file and one an unknown finding."""
    rows, trainval, test = [], [], []
    findings = ["No Finding", "Effusion", "Pleural_Thickening", "Cardiomegaly", "Pneumonia", "Atelectasis"]
    for p in range(1, n_patients + 1):
        for k in range(2):
            name = f"{p:08d}_{k:03d}.png"
            label = findings[(p + k) % len(findings)]
            if p == 1 and k == 1:
                label = "Cardiomegaly|Effusion"
            rows.append([name, label, k, p, 40 + p, "F" if p % 2 else "M", "PA", 8, 8, 0.143, 0.143])
            (test if p > n_patients - 2 else trainval).append(name)
            img(root / "images_001" / "images" / name, 100 + 2 * p + k)
    rows.append(
        ["99999999_000.png", "Pneumonia", 0, 99999999, 50, "M", "AP", 8, 8, 0.143, 0.143]
    )  # missing file
    trainval.append("99999999_000.png")
    rows.append(
        ["00000013_000.png", "Broken Bone", 0, 13, 50, "M", "AP", 8, 8, 0.143, 0.143]
    )  # unknown label
    trainval.append("00000013_000.png")
    img(root / "images_001" / "images" / "00000013_000.png", 999)
    write_csv(root / "Data_Entry_2017.csv", NIH_HEADER, rows)
    (root / "train_val_list.txt").write_text("\n".join(trainval) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root


CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS]


def _onehot(values: dict[str, float], columns: Sequence[str] = CHEXPERT_FINDINGS) -> list:
    """The label cells of one row over ``columns``. A finding that is not a column is an error: the columns
    are the importer's own list, so a name misspelt there (or here) fails instead of writing a blank cell."""
    unknown = set(values) - set(columns)
    if unknown:
        raise ValueError(f"not CheXpert label columns: {sorted(unknown)}")
    return [values.get(f, "") for f in columns]


def write_chexpert(root: Path) -> Path:
    """CheXpert-v1.0/{train,valid}.csv and images: 6 train rows (3 patients), 2 valid rows.

    Row kinds: normal + support devices (single label after dropping), uncertain edema (-1),
    multi-label, and an image with no positive finding. Sex and age are the patient's, on each row."""
    base = root / "CheXpert-v1.0"
    patients = {
        "patient00001": ("Female", 68),
        "patient00002": ("Male", 87),
        "patient00003": ("Male", 41),
        "patient64541": ("Male", 73),
        "patient64542": ("Female", 70),
    }
    train = [  # patient, study/view, Frontal/Lateral, AP/PA, findings
        (
            "patient00001",
            "study1/view1_frontal",
            "Frontal",
            "AP",
            {"No Finding": 1.0, "Support Devices": 1.0},
        ),
        ("patient00001", "study1/view2_lateral", "Lateral", "", {"Cardiomegaly": 1.0}),
        ("patient00002", "study1/view1_frontal", "Frontal", "PA", {"Edema": -1.0, "Pneumonia": 1.0}),
        ("patient00002", "study2/view1_frontal", "Frontal", "PA", {"Edema": 1.0, "Pleural Effusion": 1.0}),
        ("patient00003", "study1/view1_frontal", "Frontal", "AP", {"Lung Opacity": 1.0}),
        ("patient00003", "study1/view2_frontal", "Frontal", "AP", {"Fracture": 0.0}),
    ]
    valid = [
        ("patient64541", "study1/view1_frontal", "Frontal", "AP", {"No Finding": 1.0}),
        ("patient64542", "study1/view1_frontal", "Frontal", "PA", {"Atelectasis": 1.0}),
    ]
    for split, rows, seed0 in (("train", train, 200), ("valid", valid, 300)):
        out = []
        for i, (patient, view, fl, appa, vals) in enumerate(rows):
            p = f"{split}/{patient}/{view}.jpg"
            out.append([f"CheXpert-v1.0/{p}", *patients[patient], fl, appa, *_onehot(vals)])
            # images stored as PNG bytes under the published .jpg names: the decoder reads content, not names
            img(base / p, seed0 + i)
        write_csv(base / f"{split}.csv", CHEXPERT_HEADER, out)
    return root


#: MIMIC-CXR's CheXpert labels: the same fourteen, in alphabetical order
MIMIC_LABELS = sorted(CHEXPERT_FINDINGS)
MIMIC_METADATA_HEADER = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]


def _mimic_metadata_row(dicom: str, subject: str, study: str, view: str) -> list:
    """One metadata row: an 8x8 chest image taken erect, the view as given."""
    procedure = "CHEST (PA AND LAT)"
    return [
        dicom,
        subject,
        study,
        procedure,
        view,
        8,
        8,
        21800506,
        213014.531,
        procedure,
        "postero-anterior",
        "Erect",
    ]


def write_mimic_cxr(root: Path) -> Path:
    """mimic-cxr-2.0.0-{split,chexpert,metadata}.csv and files/pXX/pSUBJECT/sSTUDY/DICOM.jpg: 5 images."""
    images = [  # dicom_id, study, subject, split, view
        ("d1", "50000001", "10000001", "train", "PA"),
        ("d2", "50000001", "10000001", "train", "LATERAL"),
        ("d3", "50000002", "10000002", "validate", "AP"),
        ("d4", "50000003", "10000003", "test", "PA"),
        ("d5", "50000004", "10000004", "train", "AP"),
    ]
    labels = {
        "50000001": {"Pneumonia": 1.0},
        "50000002": {"No Finding": 1.0},
        "50000003": {"Edema": 1.0, "Pleural Effusion": -1.0},
        "50000004": {"Cardiomegaly": 1.0, "Edema": 1.0},
    }
    write_csv(
        root / "mimic-cxr-2.0.0-split.csv",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[d, st, su, sp] for d, st, su, sp, _ in images],
    )
    write_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv",
        ["subject_id", "study_id", *MIMIC_LABELS],
        [
            [next(su for _, s2, su, _, _ in images if s2 == st), st, *_onehot(v, MIMIC_LABELS)]
            for st, v in labels.items()
        ],
    )
    write_csv(
        root / "mimic-cxr-2.0.0-metadata.csv",
        MIMIC_METADATA_HEADER,
        [_mimic_metadata_row(d, su, st, v) for d, st, su, _, v in images],
    )
    for i, (d, st, su, _, _) in enumerate(images):
        img(root / "files" / f"p{su[:2]}" / f"p{su}" / f"s{st}" / f"{d}.jpg", 400 + i)
    return root


def write_covidx(root: Path) -> Path:
    """train_COVIDx8A.txt / test_COVIDx8A.txt and train/, test/: 6 train, 3 test, 1 malformed line."""
    train = [
        ("1", "a.png", "normal"),
        ("2", "b.png", "pneumonia"),
        ("3", "c.png", "COVID-19"),
        ("4", "d.png", "normal"),
        ("5", "e.png", "COVID-19"),
        ("6", "f.png", "pneumonia"),
    ]
    test = [("7", "g.png", "normal"), ("8", "h.png", "COVID-19"), ("9", "i.png", "pneumonia")]
    lines = [f"{p} {f} {lab} cohen" for p, f, lab in train] + ["garbage"]
    (root / "train_COVIDx8A.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "train_COVIDx8A.txt").write_text("\n".join(lines) + "\n")
    (root / "test_COVIDx8A.txt").write_text("\n".join(f"{p} {f} {lab} rsna" for p, f, lab in test) + "\n")
    for i, (_, f, _) in enumerate(train):
        img(root / "train" / f, 500 + i)
    for i, (_, f, _) in enumerate(test):
        img(root / "test" / f, 600 + i)
    return root


def write_imagefolder(root: Path, split_layout: bool = False, per_class: int = 6) -> Path:
    """ROOT/<class>/*.png (or ROOT/<split>/<class>/*.png) with classes normal and pneumonia."""
    seed = 700
    for cls in ("normal", "pneumonia"):
        for i in range(per_class):
            base = root / (["train", "val", "test"][i % 3] if split_layout else "") / cls
            img(base / f"{cls}_{i}.png", seed)
            seed += 1
    (root / "normal" if not split_layout else root / "train" / "normal").joinpath("notes.txt").write_text(
        "not an image"
    )
    return root


def write_csv_manifest(root: Path) -> Path:
    """manifest.csv (path,label,split,patient,sex,age,modality,region) with 7 rows, 2 bad."""
    rows = [
        ["img/p1_a.png", "pneumonia", "train", "P1", "F", "34", "XR", "chest"],
        ["img/p7_a.png", "pneumonia", "", "P7", "F", "34", "XR", "chest"],
        ["img/p2_a.png", "XR/chest/normal", "test", "P2", "M", "51", "", ""],
        ["img/p3_a.png", "malignant", "val", "P3", "F", "", "US", "breast"],
        ["img/p4_a.png", "normal|pneumonia", "train", "P4", "M", "60", "XR", "chest"],
        ["img/p5_a.png", "pneumonia", "holdout", "P5", "M", "60", "XR", "chest"],  # bad split
        ["img/p6_a.png", "tumour", "train", "P6", "M", "60", "", ""],  # unknown label: no modality/region
    ]
    for i, r in enumerate(rows):
        img(root / r[0], 800 + i)
    return write_csv(
        root / "manifest.csv", ["path", "label", "split", "patient", "sex", "age", "modality", "region"], rows
    )


def write_dkfz_splits(root: Path) -> Path:
    """A split CSV in the paper's format over images under ROOT/images: 6 rows, one multi-label."""
    labels = ["XR/chest/normal", "XR/chest/pneumonia", "CT/abdomen/liver_lesion"]
    rows = [
        ["images/a.png", "nih14", "train", "XR", "chest", 1, 0, 0],
        ["images/b.png", "nih14", "train", "XR", "chest", 0, 1, 0],
        ["images/c.png", "nih14", "val", "XR", "chest", 0, 1, 0],
        ["images/d.png", "radimagenet", "test", "CT", "abdomen", 0, 0, 1],
        ["images/e.png", "radimagenet", "test", "CT", "abdomen", 0, 0, 1],
        ["images/f.png", "chexpert", "train", "XR", "chest", 1, 1, 0],
    ]
    for i, r in enumerate(rows):
        img(root / r[0], 900 + i)
    return write_csv(
        root / "dkfz_splits.csv",
        ["filepath", "dataset", "split", "modality", "anatomic_region", *labels],
        rows,
    )


# --------------------------------------------------------------------------- vectors in the database
def store_vectors(
    conn,
    model: str,
    ids: list[int],
    vectors: np.ndarray,
    *,
    family: str = "synthetic",
    config: dict | None = None,
    config_hash: str = "h",
    number=lambda x: f"{x:.8g}",
    hnsw: bool = False,
) -> None:
    """An encoder row for ``model`` and its embedding table holding ``vectors`` (rows aligned with
    ``ids``), copied as text with each number written by ``number``; with ``hnsw`` its cosine HNSW index
    too; then ANALYZE. Runs in ``conn``'s transaction."""
    from psycopg import sql
    from psycopg.types.json import Jsonb

    from cbir_pg.db import identifiers

    dim = int(np.asarray(vectors).shape[1])
    conn.execute(
        "insert into cbir.encoder (key, family, dim, vector_type, config, config_hash, table_name)"
        " values (%s, %s, %s, %s, %s, %s, %s)",
        (
            model,
            family,
            dim,
            identifiers.vector_type_for(dim),
            Jsonb(config or {}),
            config_hash,
            identifiers.embedding_table_name(model),
        ),
    )
    table = identifiers.embedding_table(model)
    conn.execute(identifiers.create_embedding_table(model, dim))
    with conn.cursor().copy(sql.SQL("copy {} (image_id, embedding) from stdin").format(table)) as cp:
        for img, v in zip(ids, vectors, strict=True):
            cp.write_row((img, "[" + ",".join(number(x) for x in v) + "]"))
    if hnsw:
        conn.execute(
            sql.SQL("create index {} on {} using hnsw (embedding vector_cosine_ops)").format(
                sql.Identifier(identifiers.index_name(model)), table
            )
        )
    conn.execute(sql.SQL("analyze {}").format(table))


# --------------------------------------------------------------------------- evaluation runs in the database
def store_eval_run(conn, kind: str, model: str, mode: str | None, params: str = "{}") -> int:
    """A hand-made finished ``cbir.eval_run`` of ``kind`` (10 queries, 90 index images) with ``params``
    (JSON text); its id. Runs in ``conn``'s transaction."""
    return conn.execute(
        "insert into cbir.eval_run (kind, encoder_key, mode, params, n_queries, n_index, finished_at)"
        " values (%s, %s, %s, %s::jsonb, 10, 90, now()) returning id",
        (kind, model, mode, params),
    ).fetchone()[0]


def store_metrics(conn, run_id: int, rows: Sequence[tuple[str, int, str, float]]) -> None:
    """``cbir.eval_metric`` rows ``(metric, at, average, value)`` of run ``run_id``."""
    with conn.cursor() as cur:
        cur.executemany(
            "insert into cbir.eval_metric (run_id, metric, at, average, value) values (%s, %s, %s, %s, %s)",
            [(run_id, *r) for r in rows],
        )
