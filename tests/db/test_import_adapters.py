"""Each adapter imports a tiny dataset written in its provider's published layout."""

from __future__ import annotations

import shutil

import pytest
from datasets_fixtures import (
    img,
    write_chexpert,
    write_covidx,
    write_csv_manifest,
    write_dkfz_splits,
    write_imagefolder,
    write_mimic_cxr,
    write_nih14,
    write_radimagenet,
)

from cbir_pg.datasets import import_dataset, label_overview
from cbir_pg.db.database import Database


def rows(conn, sql: str, *args):
    return conn.execute(sql, args).fetchall()


def images(conn, key: str) -> dict[str, tuple]:
    """uri -> (split, label key, excluded, exclusion_reason, patient_key, view)."""
    out = rows(
        conn,
        "select i.uri, i.split, l.key, i.excluded, i.exclusion_reason, p.patient_key, i.view "
        "from cbir.image i join cbir.dataset d on d.id = i.dataset_id left join cbir.label l on l.id = i.label_id "
        "left join cbir.patient p on p.id = i.patient_id where d.key = %s",
        key,
    )
    return {r[0]: r[1:] for r in out}


def errors(conn, key: str) -> list[tuple[str, str]]:
    return sorted(
        (r[0], r[1])
        for r in rows(
            conn,
            "select e.reason, e.source from cbir.error e join cbir.dataset d on d.id = e.dataset_id "
            "where d.key = %s and e.stage = 'import'",
            key,
        )
    )


def test_radimagenet(db, conn, tmp_path):
    s = import_dataset(Database(db), "radimagenet", write_radimagenet(tmp_path), progress=False)
    assert (s.dataset, s.imported, s.errors) == ("radimagenet", 6, {"missing_file": 1})
    im = images(conn, "radimagenet")
    assert im["US/kidney/us001.png"][1] == "US/kidney/normal"
    assert im["US/thyroid_nodule/us002.png"][1] == "US/thyroid/nodule"
    assert im["MR/knee/acl_pathology/knee01.png"][1] == "MR/knee/acl_pathology"
    # abd001 (train) and abd003 (test) have the same pixels: the test copy is kept
    assert im["CT/abd/normal/abd001.png"][2:4] == (True, "duplicate")
    assert im["CT/abd/normal/abd003.png"][2] is False
    assert s.exact_duplicates == 1 and s.splits == {"train": 4, "val": 1, "test": 1}
    assert errors(conn, "radimagenet") == [("missing_file", "CT/abd/normal/missing.png")]
    kinds = {lab.key: lab.kind for lab in label_overview(Database(db))}
    assert kinds["CT/abd/normal"] == "anatomical" and kinds["CT/abd/acute_pancreatitis"] == "pathological"


def test_nih14(db, conn, tmp_path):
    s = import_dataset(Database(db), "nih14", write_nih14(tmp_path), seed=3, progress=False)
    assert s.imported == 24 and s.patients == 12
    assert s.errors == {"missing_file": 1, "unknown_label": 1}
    im = images(conn, "nih14")
    assert im["images_001/images/00000001_001.png"][2:4] == (True, "multi_label")
    assert {im[f"images_001/images/{p:08d}_{k:03d}.png"][0] for p in (11, 12) for k in (0, 1)} == {"test"}
    assert {v[0] for v in im.values()} == {"train", "val", "test"}
    labels = {v[1] for v in im.values()}
    assert {"XR/chest/pleural_effusion", "XR/chest/pleural_thickening", "XR/chest/normal"} <= labels
    assert not {"XR/chest/effusion"} & labels
    assert s.patients_crossing_splits == 0
    sex, age = rows(conn, "select sex, age from cbir.patient where patient_key = '3'")[0]
    assert (sex, age) == ("F", 43)
    n_labels = rows(
        conn,
        "select count(*) from cbir.image_label il join cbir.image i on i.id = il.image_id "
        "where i.uri = 'images_001/images/00000001_001.png'",
    )[0][0]
    assert n_labels == 2  # multi-label images keep all their labels


@pytest.mark.parametrize("policy", ["zeros", "exclude"])
def test_chexpert(db, conn, tmp_path, policy):
    s = import_dataset(Database(db), "chexpert", write_chexpert(tmp_path), uncertain=policy, progress=False)
    assert s.imported == 8 and s.patients == 5 and s.error_count == 0
    im = images(conn, "chexpert")
    p = "CheXpert-v1.0/train/"
    assert im[p + "patient00001/study1/view1_frontal.jpg"][1:3] == (
        "XR/chest/normal",
        False,
    )  # support devices dropped
    assert im[p + "patient00002/study2/view1_frontal.jpg"][3] == "multi_label"
    assert im[p + "patient00003/study1/view2_frontal.jpg"][3] == "no_label"
    uncertain = im[p + "patient00002/study1/view1_frontal.jpg"]
    if policy == "zeros":
        assert uncertain[1:3] == ("XR/chest/pneumonia", False)
    else:
        assert uncertain[2:4] == (True, "uncertain_label")
    assert {v[0] for k, v in im.items() if "/valid/" in k} == {"test"}
    assert {v[0] for k, v in im.items() if "/train/" in k} <= {"train", "val"}
    assert im[p + "patient00001/study1/view2_lateral.jpg"][5] == "LATERAL"
    dropped = rows(conn, "select label_id from cbir.label_map where source_label = 'Support Devices'")
    assert dropped == [(None,)]
    assert rows(conn, "select sex, age from cbir.patient where patient_key = 'patient00002'") == [("M", 87)]


def test_mimic_cxr(db, conn, tmp_path):
    s = import_dataset(Database(db), "mimic-cxr", write_mimic_cxr(tmp_path), progress=False)
    assert (s.dataset, s.imported, s.error_count) == ("mimic_cxr", 5, 0)
    assert s.splits == {"train": 3, "val": 1, "test": 1}
    im = images(conn, "mimic_cxr")
    assert im["files/p10/p10000001/s50000001/d2.jpg"][1] == "XR/chest/pneumonia"  # study-level label
    assert im["files/p10/p10000001/s50000001/d2.jpg"][5] == "LATERAL"
    assert im["files/p10/p10000003/s50000003/d4.jpg"][1] == "XR/chest/edema"
    assert im["files/p10/p10000004/s50000004/d5.jpg"][3] == "multi_label"
    assert rows(conn, "select count(*) from cbir.study")[0][0] == 4


def test_covidx(db, conn, tmp_path):
    s = import_dataset(Database(db), "covidx", write_covidx(tmp_path), progress=False)
    assert s.imported == 9 and s.errors == {"malformed_row": 1}
    im = images(conn, "covidx")
    assert im["train/c.png"][1] == "XR/chest/covid-19" and im["test/g.png"][:2] == ("test", "XR/chest/normal")
    assert s.splits.get("test") == 3 and sum(s.splits.values()) == 9


def test_imagefolder(db, conn, tmp_path):
    root = write_imagefolder(tmp_path / "pneumo")
    s = import_dataset(
        Database(db), "imagefolder", root, modality="XR", region="chest", seed=1, progress=False
    )
    assert (s.dataset, s.imported, s.error_count) == ("pneumo", 12, 0)
    assert s.labels == {"XR/chest/normal": 6, "XR/chest/pneumonia": 6}
    assert set(s.splits) <= {"train", "val", "test"} and sum(s.splits.values()) == 12
    # without a modality and region the class names cannot be harmonised: every row is an error
    s2 = import_dataset(Database(db), "imagefolder", root, name="pneumo2", progress=False)
    assert s2.imported == 0 and s2.errors == {"unknown_label": 12}
    split_root = write_imagefolder(tmp_path / "split_layout", split_layout=True)
    s3 = import_dataset(
        Database(db), "imagefolder", split_root, modality="XR", region="chest", progress=False
    )
    assert s3.splits == {"train": 4, "val": 4, "test": 4}


def test_csv_manifest(db, conn, tmp_path):
    s = import_dataset(Database(db), "csv", write_csv_manifest(tmp_path), progress=False)
    assert s.dataset == "manifest" and s.imported == 5
    assert s.errors == {"malformed_row": 1, "unknown_label": 1}
    im = images(conn, "manifest")
    assert im["img/p1_a.png"][:2] == ("train", "XR/chest/pneumonia")
    assert im["img/p2_a.png"][:2] == ("test", "XR/chest/normal")
    assert im["img/p3_a.png"][:2] == ("val", "US/breast/malignant")
    assert im["img/p4_a.png"][3] == "multi_label"
    assert im["img/p7_a.png"][0] in {"train", "val", "test"}
    assert rows(conn, "select sex, age from cbir.patient where patient_key = 'P2'") == [("M", 51)]


def test_dkfz_splits(db, conn, tmp_path):
    s = import_dataset(Database(db), "dkfz-splits", write_dkfz_splits(tmp_path), progress=False)
    assert (s.dataset, s.imported, s.error_count) == ("dkfz", 6, 0)
    assert s.splits == {"train": 3, "val": 1, "test": 2}
    assert s.excluded == {"multi_label": 1}
    assert s.labels == {
        "XR/chest/normal": 1,
        "XR/chest/pneumonia": 2,
        "CT/abdomen/liver_lesion": 2,
        "(none)": 1,
    }
    src = rows(conn, "select extra->>'source_dataset' from cbir.image where uri = 'images/d.png'")
    assert src == [("radimagenet",)]


def test_label_map_file_overrides_and_kind(db, conn, tmp_path):
    root = write_covidx(tmp_path / "cx")
    lm = tmp_path / "map.yaml"
    lm.write_text("COVID-19: {label: XR/chest/covid_pneumonia, kind: anatomical}\npneumonia: null\n")
    s = import_dataset(Database(db), "covidx", root, label_map=lm, progress=False)
    im = images(conn, "covidx")
    assert im["train/c.png"][1] == "XR/chest/covid_pneumonia"
    assert im["train/b.png"][1:4] == (None, True, "no_label")  # pneumonia dropped by the map
    lab = {x.key: x for x in label_overview(Database(db))}["XR/chest/covid_pneumonia"]
    assert lab.kind == "anatomical" and lab.kind_overridden
    assert s.excluded == {"no_label": 3}
    maps = dict(
        rows(
            conn,
            "select m.source_label, l.key from cbir.label_map m left join cbir.label l on l.id = m.label_id",
        )
    )
    assert maps == {"COVID-19": "XR/chest/covid_pneumonia", "pneumonia": None, "normal": "XR/chest/normal"}


def test_patients_never_cross_splits_and_splits_are_seeded(db, conn, tmp_path):
    root = write_nih14(tmp_path, n_patients=40)
    a = import_dataset(Database(db), "nih14", root, name="nih_a", seed=7, progress=False)
    b = import_dataset(Database(db), "nih14", root, name="nih_b", seed=7, progress=False)
    c = import_dataset(Database(db), "nih14", root, name="nih_c", seed=8, progress=False)
    assert a.patients_crossing_splits == b.patients_crossing_splits == c.patients_crossing_splits == 0
    crossing = rows(
        conn,
        "select count(*) from (select patient_id from cbir.image where patient_id is not null "
        "group by patient_id having count(distinct split) > 1) x",
    )[0][0]
    assert crossing == 0
    sa = {u: v[0] for u, v in images(conn, "nih_a").items()}
    assert sa == {u: v[0] for u, v in images(conn, "nih_b").items()}
    assert sa != {u: v[0] for u, v in images(conn, "nih_c").items()}
    assert a.splits["val"] > 0 and a.splits["train"] > a.splits["val"]


def test_injected_duplicates_are_excluded(db, conn, tmp_path):
    root = write_imagefolder(tmp_path / "dups")
    # an exact copy (other name, other class) and a near copy (one pixel changed on a larger image)
    shutil.copy(root / "normal" / "normal_0.png", root / "pneumonia" / "zz_copy.png")
    import numpy as np
    from PIL import Image

    big = img(root / "normal" / "big.png", 42, size=64)
    arr = np.asarray(Image.open(big)).copy()
    arr[0, 0] = arr[0, 0] ^ 1
    Image.fromarray(arr).save(root / "pneumonia" / "big_near.png")
    s = import_dataset(Database(db), "imagefolder", root, modality="XR", region="chest", progress=False)
    assert s.imported == 15 and s.exact_duplicates == 1 and s.near_duplicates == 1
    got = rows(
        conn,
        "select d.uri, d.exclusion_reason, k.uri from cbir.image d join cbir.image k on k.id = d.duplicate_of",
    )
    pair = {frozenset((u, k)): r for u, r, k in got}
    assert pair[frozenset(("normal/normal_0.png", "pneumonia/zz_copy.png"))] == "duplicate"
    assert pair[frozenset(("normal/big.png", "pneumonia/big_near.png"))] == "near_duplicate"
    # the rows stay; a re-import adds nothing and flags the same images
    flagged = rows(conn, "select uri from cbir.image where excluded order by uri")
    again = import_dataset(Database(db), "imagefolder", root, modality="XR", region="chest", progress=False)
    assert again.imported == 0 and again.skipped_existing == 15
    assert rows(conn, "select uri from cbir.image where excluded order by uri") == flagged


def test_cli_import_and_lists_print_true_counts(db, tmp_path):
    import subprocess
    import sys

    root = write_covidx(tmp_path / "cx")
    cmd = [sys.executable, "-m", "cbir_pg", "--dsn", db]
    out = subprocess.run(
        [*cmd, "datasets", "import", "covidx", str(root), "-q"], capture_output=True, text=True, check=True
    ).stdout
    assert "9 new images" in out and "malformed_row 1" in out
    out = subprocess.run(
        [*cmd, "datasets", "import", "covidx", str(root), "-q"], capture_output=True, text=True, check=True
    ).stdout
    assert "0 new images, 9 already present" in out
    out = subprocess.run([*cmd, "datasets", "list"], capture_output=True, text=True, check=True).stdout
    assert "covidx (covidx): 9 images" in out and "XR/chest/covid-19" in out
    out = subprocess.run(
        [*cmd, "labels", "list"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "200", **__import__("os").environ},
    ).stdout
    line = next(x for x in out.splitlines() if "XR/chest/pneumonia" in x)
    assert "pathological" in line and " 3 " in line
    bad = subprocess.run([*cmd, "datasets", "import", "nope", str(root)], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown dataset kind" in bad.stderr
