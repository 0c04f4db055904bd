"""NIH ChestX-ray14 (Wang et al., 2017): 112,120 frontal chest radiographs, 14 findings.

ROOT holds ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``), ``train_val_list.txt``,
``test_list.txt`` and the images in ``images/`` or ``images_001/images/`` ... ``images_012/images/``.
``test_list.txt`` is the test split; ``train_val_list.txt`` is split patient-wise 90:10 into train and
val with the seed. Labels are the ``|``-separated ``Finding Labels``; ``No Finding`` becomes
``XR/chest/normal``; ``Effusion`` → ``Pleural Effusion`` and ``Pleural_Thickening`` →
``Pleural Thickening``. Patient age, sex and the view position come from the CSV.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cbir_pg.datasets.base import (
    Adapter,
    Record,
    RowError,
    find_file,
    parse_age,
    parse_sex,
    read_csv,
    register_adapter,
)
from cbir_pg.datasets.harmonise import normalise_part
from cbir_pg.errors import ConfigError

RENAMES = {"Effusion": "Pleural Effusion", "Pleural_Thickening": "Pleural Thickening", "No Finding": "normal"}


def chest_label(finding: str) -> str:
    return f"XR/chest/{normalise_part(RENAMES.get(finding, finding))}"


def read_list(path: Path) -> set[str]:
    with open(path, encoding="utf-8") as fh:
        return {line.strip() for line in fh if line.strip()}


@register_adapter("nih14")
class NIH14Adapter(Adapter):
    title = "NIH ChestX-ray14"
    source_url = "https://nihcc.app.box.com/v/ChestXray-NIHCC"
    licence = "CC0 (NIH Clinical Center)"
    citation = "Wang et al., ChestX-ray8, CVPR 2017"
    FINDINGS = (
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
        "Consolidation",
        "Edema",
        "Emphysema",
        "Fibrosis",
        "Pleural_Thickening",
        "Hernia",
        "No Finding",
    )

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        self.csv = find_file(self.root, "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
        for name in ("train_val_list.txt", "test_list.txt"):
            if not (self.root / name).is_file():
                raise ConfigError(f"nih14: {name} not found in {self.root}")
        self.dirs = [self.root / "images"] + sorted(
            p / "images" for p in self.root.glob("images_*") if (p / "images").is_dir()
        )

    def default_label(self, source_label: str) -> str | None:
        from cbir_pg.datasets.base import UnknownLabel

        if source_label not in self.FINDINGS:
            raise UnknownLabel(f"{source_label!r} is not a ChestX-ray14 finding")
        return chest_label(source_label)

    def _uri(self, name: str) -> str:
        for d in self.dirs:
            if (d / name).is_file():
                return (d / name).relative_to(self.root).as_posix()
        return f"images/{name}"

    def records(self) -> Iterator[Record | RowError]:
        test = read_list(self.root / "test_list.txt")
        trainval = read_list(self.root / "train_val_list.txt")
        required = (
            "Image Index",
            "Finding Labels",
            "Patient ID",
            "Patient Age",
            "Patient Gender",
            "View Position",
        )
        for line, row in read_csv(self.csv, required):
            src = f"{self.csv.name}:{line}"
            name = (row.get("Image Index") or "").strip()
            patient = (row.get("Patient ID") or "").strip()
            findings = [f.strip() for f in (row.get("Finding Labels") or "").split("|") if f.strip()]
            if not name or not patient or not findings:
                yield RowError(src, "malformed_row", "empty Image Index, Patient ID or Finding Labels")
                continue
            split = "test" if name in test else "trainval" if name in trainval else None
            if split is None:
                yield RowError(
                    src, "malformed_row", f"{name} is in neither train_val_list.txt nor test_list.txt"
                )
                continue
            yield Record(
                uri=self._uri(name),
                labels=findings,
                split=split,
                patient=patient,
                sex=parse_sex(row.get("Patient Gender")),
                age=parse_age(row.get("Patient Age")),
                study=f"{patient}_{(row.get('Follow-up #') or '0').strip()}",
                view=(row.get("View Position") or "").strip() or None,
                modality="XR",
                region="chest",
                extra={"follow_up": (row.get("Follow-up #") or "").strip()},
            )
