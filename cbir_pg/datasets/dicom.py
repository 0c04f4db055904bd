"""A folder of DICOM files (user data), read with pydicom.

Every file under ROOT ending in ``.dcm``/``.dicom`` or carrying the ``DICM`` preamble is read
(headers only here; pixels are decoded once by the importer through :func:`cbir_pg.images.decode_file`,
which applies the modality LUT / rescale, then the VOI LUT / window, and inverts MONOCHROME1).
Modality, body part, view, study and series come from the tags; patient sex and age are stored.
Patient ids, study and series UIDs are stored only as salted hashes (the salt is
``cbir.installation.patient_salt``); patient names are never read. Splits: patient-wise by the seed
(``fractions`` option). DICOM files carry no diagnosis: images have no label unless the ``label``
option (one source label for all) or ``label_from=folder`` (the parent folder is the finding, with
the modality and body part from the tags) gives one.
"""

from __future__ import annotations

from collections.abc import Iterator

from cbir_pg.datasets.base import Adapter, Record, RowError, parse_age, parse_sex, register_adapter
from cbir_pg.datasets.harmonise import normalise_part
from cbir_pg.datasets.splits import DEFAULT_FRACTIONS, parse_fractions
from cbir_pg.errors import ConfigError

MODALITY_CODES = {"CR": "XR", "DX": "XR", "RG": "XR", "MR": "MR", "CT": "CT", "US": "US"}


@register_adapter("dicom")
class DicomFolderAdapter(Adapter):
    title = "DICOM folder"
    single_label = True
    require_label = False
    identifying_ids = True
    options_help = {
        "label": "one source label for every image, e.g. CT/abdomen/normal",
        "label_from": "'folder': the parent folder name is the finding",
        "fractions": "train,val,test fractions for the patient-wise split (default 0.7,0.1,0.2)",
    }

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        if not self.root.is_dir():
            raise ConfigError(f"dicom: {self.root} is not a folder")
        self.fractions = (
            parse_fractions(self.options["fractions"]) if self.options.get("fractions") else DEFAULT_FRACTIONS
        )
        if self.options.get("label_from") not in (None, "folder"):
            raise ConfigError("dicom: label_from must be 'folder'")

    @classmethod
    def default_key(cls, root, options):
        name = normalise_part(root.name).replace("-", "_")
        return name if name[:1].isalpha() else f"dicom_{name}"

    def _files(self) -> Iterator:
        for f in sorted(self.root.rglob("*")):
            if not f.is_file():
                continue
            if f.suffix.lower() in (".dcm", ".dicom"):
                yield f
                continue
            try:
                with open(f, "rb") as fh:
                    if fh.read(132)[128:132] == b"DICM":
                        yield f
            except OSError:
                continue

    def records(self) -> Iterator[Record | RowError]:
        import pydicom

        for f in self._files():
            uri = f.relative_to(self.root).as_posix()
            try:
                ds = pydicom.dcmread(
                    f,
                    stop_before_pixels=True,
                    force=True,
                    specific_tags=[
                        "Modality",
                        "BodyPartExamined",
                        "StudyInstanceUID",
                        "SeriesInstanceUID",
                        "PatientID",
                        "PatientSex",
                        "PatientAge",
                        "ViewPosition",
                        "StudyDate",
                        "SOPInstanceUID",
                    ],
                )
            except Exception as exc:  # pydicom raises many types on broken files
                yield RowError(
                    uri, "corrupt_dicom", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                )
                continue

            def tag(name: str, ds=ds) -> str | None:
                v = ds.get(name)
                s = str(v).strip() if v is not None else ""
                return s or None

            raw_mod = (tag("Modality") or "").upper()
            modality = MODALITY_CODES.get(raw_mod, raw_mod or None)
            region = normalise_part(tag("BodyPartExamined") or "") or None
            labels: list[str] = []
            if self.options.get("label"):
                labels = [str(self.options["label"])]
            elif self.options.get("label_from") == "folder" and modality and region and f.parent != self.root:
                labels = [f"{modality}/{region}/{f.parent.name}"]
            series = tag("SeriesInstanceUID")
            yield Record(
                uri=uri,
                labels=labels,
                split=None,
                patient=tag("PatientID") or f"file:{uri}",
                sex=parse_sex(tag("PatientSex")),
                age=parse_age(tag("PatientAge")),
                study=tag("StudyInstanceUID"),
                view=tag("ViewPosition"),
                modality=modality,
                region=region,
                extra={"dicom_modality": raw_mod} | ({"series": series} if series else {}),
            )
