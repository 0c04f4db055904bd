"""Pure logic of dataset import: label keys, the kind rule, label-map files, seeded splits, adapters' parsers."""

from __future__ import annotations

import pytest

from cbir_pg.datasets import get_adapter, list_adapters
from cbir_pg.datasets.base import parse_age
from cbir_pg.datasets.chexpert import labels_from_row
from cbir_pg.datasets.harmonise import derive_kind, load_label_map, normalise_key
from cbir_pg.datasets.nih14 import chest_label
from cbir_pg.datasets.radimagenet import folder_label
from cbir_pg.datasets.splits import TRAINVAL_FRACTIONS, assign_split, hash_patient_id
from cbir_pg.errors import ConfigError, InputError


def test_registry_lists_every_adapter_and_refuses_unknown():
    assert set(list_adapters()) == {
        "radimagenet",
        "nih14",
        "chexpert",
        "mimic-cxr",
        "covidx",
        "medmnist",
        "imagefolder",
        "csv",
        "dicom",
        "dkfz-splits",
        "dicomweb",
        "dicom-received",
    }
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        get_adapter("nope")


def test_label_keys_are_normalised():
    assert normalise_key("xr/Chest/Pleural Effusion") == "XR/chest/pleural_effusion"
    assert normalise_key("MRI/knee/ACL_tear") == "MR/knee/acl_tear"
    for bad in ("XR/chest", "XR//x", "chest/normal/x/y", "1X/chest/normal"):
        with pytest.raises(InputError):
            normalise_key(bad)


@pytest.mark.parametrize(
    "key, kind",
    [
        ("CT/abdomen/normal", "anatomical"),
        ("US/kidney/kidney", "anatomical"),
        ("CT/abd/liver", "anatomical"),
        ("XR/chest/pneumonia", "pathological"),
        ("US/breast/malignant", "pathological"),
    ],
)
def test_kind_rule(key: str, kind: str):
    assert derive_kind(key) == kind


@pytest.mark.parametrize(
    "rename, source, key",
    [
        (chest_label, "Effusion", "XR/chest/pleural_effusion"),
        (chest_label, "Pleural_Thickening", "XR/chest/pleural_thickening"),
        (chest_label, "No Finding", "XR/chest/normal"),
        (folder_label, "US/kidney/x.png", "US/kidney/normal"),
        (folder_label, "US/thyroid_nodule/x.png", "US/thyroid/nodule"),
        (folder_label, "radiology_ai/CT/abd/normal/x.png", "CT/abd/normal"),
    ],
)
def test_source_label_renames(rename, source: str, key: str):
    assert rename(source) == key


def test_uncertainty_policies():
    row = {"Edema": "-1.0", "Pneumonia": "1.0", "Cardiomegaly": "0.0", "Support Devices": "-1.0"}
    assert labels_from_row(row, "zeros") == (["Pneumonia", "Support Devices"], False)
    assert labels_from_row(row, "ones") == (["Edema", "Pneumonia", "Support Devices"], False)
    assert labels_from_row(row, "exclude") == (["Pneumonia", "Support Devices"], True)


def test_splits_are_deterministic_and_near_their_fractions():
    keys = [f"patient{i}" for i in range(5000)]
    a = [assign_split(k, 0, TRAINVAL_FRACTIONS) for k in keys]
    assert a == [assign_split(k, 0, TRAINVAL_FRACTIONS) for k in keys]
    assert set(a) == {"train", "val"}
    assert 0.08 < a.count("val") / len(a) < 0.12
    assert a != [assign_split(k, 1, TRAINVAL_FRACTIONS) for k in keys]
    b = [assign_split(k, 0) for k in keys]
    assert 0.17 < b.count("test") / len(b) < 0.23


def test_patient_hash_is_salted():
    assert hash_patient_id("123", "s1") == hash_patient_id("123", "s1") != hash_patient_id("123", "s2")
    assert "123" not in hash_patient_id("123", "s1")


def test_parse_age():
    assert parse_age("058Y") == 58 and parse_age("45") == 45 and abs(parse_age("006M") - 0.5) < 1e-9
    assert parse_age("") is None and parse_age("abc") is None and parse_age("400") is None


def test_label_map_files(tmp_path):
    c = tmp_path / "m.csv"
    c.write_text(
        "source_label,label,kind\nEffusion,XR/chest/Pleural Effusion,\nSupport Devices,,\nMass,XR/chest/mass,anatomical\n"
    )
    m = load_label_map(c)
    assert m.entries == {
        "Effusion": "XR/chest/pleural_effusion",
        "Support Devices": None,
        "Mass": "XR/chest/mass",
    }
    assert m.kinds == {"XR/chest/mass": "anatomical"}
    y = tmp_path / "m.yaml"
    y.write_text(
        "a: XR/chest/x\nb: {label: CT/head/bleed, kind: pathological}\nc: null\nkinds: {XR/chest/x: anatomical}\n"
    )
    m = load_label_map(y)
    assert m.entries == {"a": "XR/chest/x", "b": "CT/head/bleed", "c": None}
    assert m.kinds == {"CT/head/bleed": "pathological", "XR/chest/x": "anatomical"}
    bad = tmp_path / "bad.csv"
    bad.write_text("source_label,label,kind\nx,XR/chest/y,weird\n")
    with pytest.raises(ConfigError, match="kind"):
        load_label_map(bad)
    with pytest.raises(ConfigError, match="source_label,label"):
        (tmp_path / "nocols.csv").write_text("a,b\n1,2\n")
        load_label_map(tmp_path / "nocols.csv")
