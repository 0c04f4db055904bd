"""CheXpert (Irvin et al., 2019) and, sharing its label handling, MIMIC-CXR-JPG.

ROOT is the folder that holds ``CheXpert-v1.0/`` (or ``CheXpert-v1.0-small/``), or that folder
itself. ``train.csv`` is split patient-wise 90:10 into train and val with the seed; ``valid.csv`` is
the test split. ``Support Devices`` is dropped (a ``label_map`` row with no label). ``No Finding``
becomes ``XR/chest/normal``. Sex and age come from the CSVs.

**Uncertainty policy** (option ``uncertain``, CLI ``--uncertain``) for labels marked ``-1``:

* ``zeros`` (default, U-Zeros): an uncertain finding counts as absent;
* ``ones`` (U-Ones): an uncertain finding counts as present;
* ``exclude``: an image with any uncertain finding (other than Support Devices) is imported but
  excluded with reason ``uncertain_label``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cbir_pg.datasets.base import (
    Adapter,
    Record,
    RowError,
    UnknownLabel,
    find_file,
    parse_age,
    parse_sex,
    read_csv,
    register_adapter,
)
from cbir_pg.datasets.harmonise import normalise_part
from cbir_pg.errors import ConfigError

#: the fourteen label columns of ``train.csv`` and ``valid.csv``, in the published order (MIMIC-CXR's
#: ``-chexpert.csv`` has the same, sorted); ``tests/datasets_fixtures.py`` writes its CSVs with them
CHEXPERT_FINDINGS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
DROPPED = {"Support Devices"}
POLICIES = ("zeros", "ones", "exclude")


def chexpert_label(finding: str) -> str | None:
    if finding in DROPPED:
        return None
    if finding not in CHEXPERT_FINDINGS:
        raise UnknownLabel(f"{finding!r} is not a CheXpert finding")
    return "XR/chest/normal" if finding == "No Finding" else f"XR/chest/{normalise_part(finding)}"


def check_policy(value) -> str:
    policy = str(value or "zeros").lower()
    if policy not in POLICIES:
        raise ConfigError(f"uncertain-label policy {value!r}: use one of {', '.join(POLICIES)}")
    return policy


def labels_from_row(row: dict[str, str], policy: str) -> tuple[list[str], bool]:
    """Positive findings under ``policy``, and whether a kept finding was uncertain."""
    positives, uncertain = [], False
    for f in CHEXPERT_FINDINGS:
        v = (row.get(f) or "").strip()
        if not v:
            continue
        try:
            x = float(v)
        except ValueError:
            continue
        if x == 1.0:
            positives.append(f)
        elif x == -1.0:
            if f in DROPPED:
                positives.append(f)  # dropped anyway by the label map
            elif policy == "ones":
                positives.append(f)
            elif policy == "exclude":
                uncertain = True
    return positives, uncertain


class _CheXpertLabelled(Adapter):
    """A source labelled by the CheXpert labeler: the ``uncertain`` policy option and the findings'
    harmonised keys (:func:`chexpert_label`)."""

    options_help = {"uncertain": "policy for uncertain (-1) labels: zeros (default), ones or exclude"}

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        self.policy = check_policy(self.options.get("uncertain"))

    def default_label(self, source_label: str) -> str | None:
        return chexpert_label(source_label)


@register_adapter("chexpert")
class CheXpertAdapter(_CheXpertLabelled):
    title = "CheXpert"
    source_url = "https://stanfordmlgroup.github.io/competitions/chexpert/"
    licence = "Stanford University School of Medicine CheXpert Dataset Research Use Agreement"
    citation = "Irvin et al., CheXpert, AAAI 2019"

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        base = None
        for name in ("CheXpert-v1.0", "CheXpert-v1.0-small"):
            if (self.root / name / "train.csv").is_file():
                base = self.root / name
        if base is None and (self.root / "train.csv").is_file():
            base = self.root
        if base is None:
            raise ConfigError(f"chexpert: no CheXpert-v1.0/train.csv in {self.root}")
        self.base = base

    def image_root(self) -> Path:
        return self.base.parent

    def records(self) -> Iterator[Record | RowError]:
        for fname, split in (("train.csv", "trainval"), ("valid.csv", "test")):
            path = self.base / fname
            if not path.is_file():
                continue
            for line, row in read_csv(path, ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")):
                src = f"{fname}:{line}"
                p = (row.get("Path") or "").strip()
                parts = p.split("/")
                pat = next((x for x in parts if x.startswith("patient")), None)
                study = next((x for x in parts if x.startswith("study")), None)
                if not p or pat is None or study is None:
                    yield RowError(src, "malformed_row", f"path {p!r} lacks patientNNNNN/studyN")
                    continue
                positives, uncertain = labels_from_row(row, self.policy)
                fl = (row.get("Frontal/Lateral") or "").strip()
                view = (
                    (row.get("AP/PA") or "").strip() or None
                    if fl == "Frontal"
                    else ("LATERAL" if fl else None)
                )
                yield Record(
                    uri=p,
                    labels=positives,
                    split=split,
                    patient=pat,
                    sex=parse_sex(row.get("Sex")),
                    age=parse_age(row.get("Age")),
                    study=f"{pat}/{study}",
                    view=view,
                    modality="XR",
                    region="chest",
                    exclusion="uncertain_label" if uncertain else None,
                    extra={"frontal_lateral": fl} if fl else {},
                )


@register_adapter("mimic-cxr")
class MIMICCXRAdapter(_CheXpertLabelled):
    """MIMIC-CXR-JPG 2.0.0 (Johnson et al.): see :mod:`cbir_pg.datasets.chexpert` for the label policy.

    ROOT holds ``mimic-cxr-2.0.0-split.csv``, ``-chexpert.csv`` and ``-metadata.csv`` (``.gz`` too) and
    ``files/p10/p10000032/s50414267/<dicom_id>.jpg``. ``validate`` becomes ``val``. Labels are
    study-level (every image of a study gets them); the view position comes from the metadata. The
    label and view tables are held as dictionaries; the split file is streamed.
    """

    title = "MIMIC-CXR-JPG"
    source_url = "https://physionet.org/content/mimic-cxr-jpg/2.0.0/"
    licence = "PhysioNet Credentialed Health Data License 1.5.0"
    citation = "Johnson et al., MIMIC-CXR-JPG, arXiv:1901.07042"

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        self.split_csv = find_file(self.root, "mimic-cxr-2.0.0-split.csv")
        self.labels_csv = find_file(self.root, "mimic-cxr-2.0.0-chexpert.csv")
        self.meta_csv = find_file(self.root, "mimic-cxr-2.0.0-metadata.csv")

    @classmethod
    def default_key(cls, root, options):
        return "mimic_cxr"

    def records(self) -> Iterator[Record | RowError]:
        study_labels: dict[str, tuple[tuple[str, ...], bool]] = {}
        for _, row in read_csv(self.labels_csv, ("subject_id", "study_id")):
            pos, unc = labels_from_row(row, self.policy)
            study_labels[row["study_id"].strip()] = (tuple(pos), unc)
        views: dict[str, str] = {}
        for _, row in read_csv(self.meta_csv, ("dicom_id", "ViewPosition")):
            views[row["dicom_id"].strip()] = (row.get("ViewPosition") or "").strip()
        splits = {"train": "train", "validate": "val", "val": "val", "test": "test"}
        for line, row in read_csv(self.split_csv, ("dicom_id", "study_id", "subject_id", "split")):
            src = f"{self.split_csv.name}:{line}"
            dicom, study, subject = (
                row["dicom_id"].strip(),
                row["study_id"].strip(),
                row["subject_id"].strip(),
            )
            split = splits.get(row["split"].strip().lower())
            if not dicom or not study or not subject or split is None:
                yield RowError(src, "malformed_row", f"bad dicom_id/study_id/subject_id/split: {dict(row)}")
                continue
            pos, unc = study_labels.get(study, ((), False))
            yield Record(
                uri=f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg",
                labels=list(pos),
                split=split,
                patient=subject,
                study=study,
                view=views.get(dicom) or None,
                modality="XR",
                region="chest",
                exclusion="uncertain_label" if unc else None,
            )
