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

Coded attributes (Modality, BodyPartExamined, ViewPosition) are stored only when they are valid values
of their DICOM code set (:data:`MODALITIES`, :data:`BODY_PARTS`, :data:`VIEW_POSITIONS`); anything else,
e.g. a ViewPosition of ``PA ANNA SMITH``, is stored as null. Free-text attributes are never read.

Managed copy, the default: exports are often foldered and named by patient
(``DOE^JOHN_MRN12345678/.../IM_DOE_JOHN_0001.dcm``). So the pixels of each file are decoded once and
written to the managed store as a PNG named ``<k[:2]>/<k>.<pixel sha256>.png``, where ``k`` is a salted
hash of the file's path: ``cbir.image.uri``, ``cbir.error.source`` and the dataset's root (the managed
store under ``CBIR_PG_HOME``) and key (``dicom_managed`` unless ``--name``) carry no name from the source
paths, and the source folder is not recorded. ``keep_paths`` (``cbir-pg datasets import dicom ROOT
--keep-paths``) stores the source paths and root as they are instead: only for folders whose paths hold
no names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from cbir_pg.datasets.base import Adapter, Record, RowError, parse_age, parse_sex, register_adapter
from cbir_pg.datasets.harmonise import normalise_part
from cbir_pg.datasets.store import managed_name, write_png
from cbir_pg.errors import ConfigError
from cbir_pg.rules import is_on

MODALITY_CODES = {"CR": "XR", "DX": "XR", "RG": "XR", "MR": "MR", "CT": "CT", "US": "US"}
#: DICOM PS3.3 C.7.3.1.1.1 Modality defined terms (current and retired image modalities)
MODALITIES = frozenset(
    [
        "AR",
        "ASMT",
        "AU",
        "BDUS",
        "BI",
        "BMD",
        "CR",
        "CT",
        "CTPROTOCOL",
        "DG",
        "DMS",
        "DOC",
        "DX",
        "ECG",
        "EPS",
        "ES",
        "FID",
        "GM",
        "HC",
        "HD",
        "IO",
        "IOL",
        "IVOCT",
        "IVUS",
        "KER",
        "KO",
        "LEN",
        "LS",
        "MG",
        "MR",
        "M3D",
        "NM",
        "OAM",
        "OCT",
        "OP",
        "OPM",
        "OPT",
        "OPTBSV",
        "OPTENF",
        "OPV",
        "OSS",
        "OT",
        "PLAN",
        "POS",
        "PR",
        "PT",
        "PX",
        "REG",
        "RESP",
        "RF",
        "RG",
        "RTDOSE",
        "RTIMAGE",
        "RTINTENT",
        "RTPLAN",
        "RTRAD",
        "RTRECORD",
        "RTSEGANN",
        "RTSTRUCT",
        "RWV",
        "SEG",
        "SM",
        "SMR",
        "SR",
        "SRF",
        "STAIN",
        "TEXTUREMAP",
        "TG",
        "US",
        "VA",
        "XA",
        "XAPROTOCOL",
        "XC",
        "DS",
        "DF",
        "CF",
        "CS",
        "EC",
        "FA",
        "LP",
        "MA",
        "MS",
        "OPR",
        "ST",
        "VF",
    ]
)
#: DICOM PS3.3 C.8.11.5 / C.8.19.6 ViewPosition defined terms (radiography) and the mammography views
#: of CID 4014 that scanners write there
VIEW_POSITIONS = frozenset(
    [
        "AP",
        "PA",
        "LL",
        "RL",
        "RLD",
        "LLD",
        "RLO",
        "LLO",
        "LAT",
        "LATERAL",
        "CC",
        "MLO",
        "ML",
        "LM",
        "LMO",
        "SIO",
        "XCC",
        "XCCL",
        "XCCM",
        "FB",
        "AT",
    ]
)
#: DICOM PS3.16 Annex L BodyPartExamined defined terms (the common ones)
BODY_PARTS = frozenset(
    [
        "ABDOMEN",
        "ABDOMENPELVIS",
        "ACJOINT",
        "ANKLE",
        "AORTA",
        "ARM",
        "AXILLA",
        "BACK",
        "BLADDER",
        "BRAIN",
        "BREAST",
        "BRONCHUS",
        "BUTTOCK",
        "CALCANEUS",
        "CALF",
        "CAROTID",
        "CEREBELLUM",
        "CERVIX",
        "CHEST",
        "CHESTABDOMEN",
        "CHESTABDPELVIS",
        "CIRCLEOFWILLIS",
        "CLAVICLE",
        "COCCYX",
        "COLON",
        "CORNEA",
        "CORONARYARTERY",
        "CSPINE",
        "CTSPINE",
        "DUODENUM",
        "EAR",
        "ELBOW",
        "ESOPHAGUS",
        "EXTREMITY",
        "EYE",
        "EYELID",
        "FACE",
        "FEMUR",
        "FINGER",
        "FOOT",
        "GALLBLADDER",
        "HAND",
        "HEAD",
        "HEADNECK",
        "HEART",
        "HIP",
        "HUMERUS",
        "ILEUM",
        "ILIUM",
        "IAC",
        "JAW",
        "JEJUNUM",
        "KIDNEY",
        "KNEE",
        "LARYNX",
        "LEG",
        "LIVER",
        "LSPINE",
        "LSSPINE",
        "LUNG",
        "MAXILLA",
        "MEDIASTINUM",
        "MOUTH",
        "NECK",
        "NECKCHEST",
        "NECKCHESTABDOMEN",
        "NECKCHESTABDPELV",
        "NOSE",
        "ORBIT",
        "OVARY",
        "PANCREAS",
        "PAROTID",
        "PATELLA",
        "PELVIS",
        "PENIS",
        "PHARYNX",
        "PROSTATE",
        "RECTUM",
        "RIB",
        "SACRUM",
        "SCAPULA",
        "SCLERA",
        "SCROTUM",
        "SHOULDER",
        "SKULL",
        "SPINE",
        "SPLEEN",
        "SSPINE",
        "STERNUM",
        "STOMACH",
        "SUBMANDIBULAR",
        "TESTIS",
        "THIGH",
        "THUMB",
        "THYMUS",
        "THYROID",
        "TIBIA",
        "TOE",
        "TONGUE",
        "TRACHEA",
        "TSPINE",
        "TLSPINE",
        "UPRGASTROINTESTINAL",
        "URETER",
        "URETHRA",
        "UTERUS",
        "VAGINA",
        "VULVA",
        "WHOLEBODY",
        "WRIST",
        "ZYGOMA",
    ]
)


def coded(value: str | None, code_set: frozenset[str]) -> str | None:
    """``value`` (stripped, upper case) when it is a valid code of ``code_set``, else ``None``: a coded
    attribute holding free text (a name typed into ViewPosition) is never stored."""
    v = (value or "").strip().upper()
    return v if v in code_set else None


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
        "managed_copy": "copy the pixels into the managed store (the default)",
        "keep_paths": "store the source paths and root as they are (may carry patient names)",
    }
    #: set by the importer before :meth:`records`: the salt for hashing paths (``managed_copy``)
    salt: str = ""

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        if not self.root.is_dir():
            raise ConfigError(f"dicom: {self.root} is not a folder")
        self.fractions = self.fractions_option()
        if self.options.get("label_from") not in (None, "folder"):
            raise ConfigError("dicom: label_from must be 'folder'")
        self.managed = _managed(self.options)

    @classmethod
    def default_key(cls, root, options):
        if _managed(options):
            return "dicom_managed"  # the folder's name may be a patient's
        return cls.key_from_name(root.name, "dicom")

    def image_root(self):
        if not self.managed:
            return self.root
        from cbir_pg.config import get_settings

        return get_settings().image_root / self.key

    def _path_key(self, uri: str) -> str:
        from cbir_pg.datasets.splits import hash_patient_id

        return hash_patient_id(f"path:{uri}", self.salt)[:32]

    def _files(self) -> Iterator:
        for f in sorted(self.root.rglob("*")):
            if not f.is_file():
                if f.suffix.lower() in (".dcm", ".dicom") and not f.is_dir():
                    yield f  # a FIFO or device named like a DICOM file: records() reports it
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
        for f in self._files():
            uri = f.relative_to(self.root).as_posix()
            source = f"dicom:{self._path_key(uri)}" if self.managed else uri
            yield self._record(f, uri, source)

    def _record(self, f, uri: str, source: str) -> Record | RowError:
        """One file's record (its header's coded attributes; in a managed copy its pixels, to be
        written under a name from their hash), or the row error that says why it has none."""
        from cbir_pg.images import DecodeError, decode_file, pixel_hash, stat_regular_file

        try:
            stat_regular_file(f)
        except DecodeError as exc:
            return RowError(source, exc.reason, f"{source}: {exc.reason}: {exc.detail}")
        h = _read_header(f, source, self.managed)
        if isinstance(h, RowError):
            return h
        pixels = write = None
        if self.managed:
            try:
                pixels = decode_file(f)
            except DecodeError as exc:  # the message names the file: record the path key only
                return RowError(source, exc.reason, f"{source}: {exc.reason}: {exc.detail}")
            uri = managed_name(f"{source[6:8]}/{source[6:]}", pixel_hash(pixels))
            write = _writer(self.image_root() / uri, pixels)
        extra = {"dicom_modality": h.raw_modality or None} | ({"series": h.series} if h.series else {})
        return h.record(uri, self._labels(f, h), f"file:{uri}", extra, pixels, write)

    def _labels(self, f, h: Header) -> list[str]:
        """The ``label`` option, or ``modality/region/folder`` with ``label_from=folder``."""
        if self.options.get("label"):
            return [str(self.options["label"])]
        if self.options.get("label_from") == "folder" and h.modality and h.region and f.parent != self.root:
            return [f"{h.modality}/{h.region}/{f.parent.name}"]
        return []


#: the header elements an import reads (coded attributes and UIDs; never a name)
HEADER_TAGS = [
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
]


def _read_header(f, source: str, managed: bool) -> Header | RowError:
    import pydicom

    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True, specific_tags=HEADER_TAGS)
    except Exception as exc:  # pydicom raises many types on broken files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return RowError(source, "corrupt_dicom", type(exc).__name__ if managed else detail)
    return Header.read(ds)


def tag(ds, name: str) -> str | None:
    """A header element as stripped text, ``None`` when absent or empty."""
    v = ds.get(name)
    s = str(v).strip() if v is not None else ""
    return s or None


@dataclass(frozen=True)
class Header:
    """What an import keeps of a DICOM header: coded modality (and the raw code), body region, view,
    sex and age, and the patient, study and series ids (hashed later, as for every source)."""

    raw_modality: str
    modality: str | None
    region: str | None
    view: str | None
    sex: str | None
    age: float | None
    patient: str | None
    study: str | None
    series: str | None

    @classmethod
    def read(cls, ds) -> Header:
        raw_mod = coded(tag(ds, "Modality"), MODALITIES) or ""
        part = coded(tag(ds, "BodyPartExamined"), BODY_PARTS)
        return cls(
            raw_modality=raw_mod,
            modality=MODALITY_CODES.get(raw_mod, raw_mod or None),
            region=normalise_part(part) if part else None,
            view=coded(tag(ds, "ViewPosition"), VIEW_POSITIONS),
            sex=parse_sex(tag(ds, "PatientSex")),
            age=parse_age(tag(ds, "PatientAge")),
            patient=tag(ds, "PatientID"),
            study=tag(ds, "StudyInstanceUID"),
            series=tag(ds, "SeriesInstanceUID"),
        )

    def record(self, uri: str, labels: list[str], no_patient: str, extra: dict, pixels, write) -> Record:
        """The import record of this header's image (``no_patient``: the patient key without a PatientID)."""
        same = {f: getattr(self, f) for f in ("sex", "age", "study", "view", "modality", "region")}
        patient = self.patient or no_patient
        return Record(
            uri=uri,
            labels=labels,
            split=None,
            patient=patient,
            extra=extra,
            pixels=pixels,
            write=write,
            **same,
        )


def _managed(options) -> bool:
    """Managed copy unless ``keep_paths`` (asking for both is an error)."""
    if is_on(options.get("keep_paths")) and is_on(options.get("managed_copy")):
        raise ConfigError("dicom: --keep-paths and --managed-copy exclude each other")
    return not is_on(options.get("keep_paths"))


def _writer(path, pixels):
    def write() -> None:
        write_png(path, pixels)

    return write
