"""Harmonised labels: the ``<MODALITY>/<region>/<finding>`` key, the kind rule, and label-map files.

**Key.** Modality is upper case (``CT``, ``MR``, ``US``, ``XR``); region and finding are lower case,
with runs of spaces and underscores folded to one ``_`` (``Pleural Effusion`` → ``pleural_effusion``).
So NIH14's ``Effusion`` (renamed ``Pleural Effusion``) and CheXpert's ``Pleural Effusion`` both become
``XR/chest/pleural_effusion``: one harmonised class.

**Kind rule** (:func:`derive_kind`). A label is *anatomical* when its finding is a normal/healthy
finding (``normal``, ``healthy``, ``no_finding``, ``benign_or_normal``) or names anatomy (the finding
equals the region, or is an organ/body-part name from :data:`ANATOMY`, as in RadImageNet's organ
folders); every other finding (a disease, lesion or abnormality) is *pathological*. A label-map file's
``kind`` column overrides the rule (``cbir.label.kind_overridden`` is then true).

**Label-map files** (:func:`load_label_map`) map a dataset's source labels to harmonised keys:

* CSV with a header ``source_label,label[,kind]``; an empty ``label`` drops the source label.
* YAML: ``{source_label: key}``, or ``{source_label: {label: key, kind: anatomical}}``, or a list of
  ``{source_label, label, kind}`` mappings; ``null`` drops the source label. An optional top-level
  ``kinds: {key: kind}`` overrides kinds without remapping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cbir_pg.errors import ConfigError, InputError

KINDS = ("anatomical", "pathological")
MODALITIES = ("CT", "MR", "US", "XR", "NM", "PT", "MG", "DX", "CR", "OT")

NORMAL_FINDINGS = frozenset({"normal", "healthy", "no_finding", "benign_or_normal", "negative"})
#: organ / body-part names: a label whose finding is one of these names anatomy, not disease.
ANATOMY = frozenset(
    {
        "abdomen",
        "abd",
        "ankle",
        "aorta",
        "bladder",
        "bowel",
        "brain",
        "breast",
        "cervix",
        "chest",
        "colon",
        "elbow",
        "endometrium",
        "foot",
        "gallbladder",
        "gb",
        "head",
        "heart",
        "hip",
        "kidney",
        "knee",
        "liver",
        "lung",
        "ovary",
        "pancreas",
        "pelvis",
        "prostate",
        "retroperitoneum",
        "shoulder",
        "spine",
        "spleen",
        "thyroid",
        "uterus",
        "wrist",
        "skull",
        "neck",
        "hand",
        "leg",
        "arm",
    }
)

_FOLD = re.compile(r"[\s_]+")
_PART = re.compile(r"^[a-z0-9][a-z0-9_\-+.()&,']*$")


@dataclass(frozen=True)
class LabelKey:
    modality: str
    region: str
    finding: str

    @property
    def key(self) -> str:
        return f"{self.modality}/{self.region}/{self.finding}"

    def __str__(self) -> str:
        return self.key


def normalise_part(text: str) -> str:
    return _FOLD.sub("_", str(text).strip().lower()).strip("_")


def parse_label_key(text: str) -> LabelKey:
    """Parse and normalise ``MOD/region/finding``; raises :class:`InputError` when malformed."""
    parts = [p for p in str(text).strip().split("/")]
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise InputError(f"label {text!r} is not of the form <MODALITY>/<region>/<finding>")
    modality = parts[0].strip().upper()
    region, finding = normalise_part(parts[1]), normalise_part(parts[2])
    if modality == "MRI":
        modality = "MR"
    if not re.fullmatch(r"[A-Z]{2,4}", modality):
        raise InputError(
            f"label {text!r}: modality {parts[0]!r} is not a modality code such as CT, MR, US, XR"
        )
    for p in (region, finding):
        if not _PART.fullmatch(p):
            raise InputError(f"label {text!r}: {p!r} has characters a label part cannot hold")
    return LabelKey(modality, region, finding)


def normalise_key(text: str) -> str:
    return parse_label_key(text).key


def derive_kind(key: str | LabelKey) -> str:
    """``anatomical`` or ``pathological`` by the documented rule (see the module docstring)."""
    lk = key if isinstance(key, LabelKey) else parse_label_key(key)
    if lk.finding in NORMAL_FINDINGS or lk.finding == lk.region or lk.finding in ANATOMY:
        return "anatomical"
    return "pathological"


@dataclass
class LabelMapFile:
    """A parsed label-map file: ``entries`` source label → key (``None``: drop); ``kinds`` key → kind."""

    entries: dict[str, str | None] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)


def _check_kind(kind, where: str) -> str | None:
    if kind is None or str(kind).strip() == "":
        return None
    k = str(kind).strip().lower()
    if k not in KINDS:
        raise ConfigError(f"{where}: kind {kind!r} must be 'anatomical' or 'pathological'")
    return k


def _add(out: LabelMapFile, source, label, kind, where: str) -> None:
    if source is None or str(source).strip() == "":
        raise ConfigError(f"{where}: empty source_label")
    src = str(source).strip()
    try:
        key = None if label is None or str(label).strip() == "" else normalise_key(str(label))
    except InputError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    out.entries[src] = key
    k = _check_kind(kind, where)
    if k and key:
        out.kinds[key] = k


def load_label_map(path: str | Path) -> LabelMapFile:
    """Read a CSV or YAML label-map file (format in the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"label map {p} does not exist")
    out = LabelMapFile()
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"label map {p}: invalid YAML: {str(exc).splitlines()[0]}") from None
        if isinstance(data, dict):
            kinds = data.pop("kinds", None) or {}
            for src, val in data.items():
                if isinstance(val, dict):
                    _add(out, src, val.get("label"), val.get("kind"), f"label map {p}")
                else:
                    _add(out, src, val, None, f"label map {p}")
        elif isinstance(data, list):
            kinds = {}
            for i, item in enumerate(data):
                if not isinstance(item, dict):
                    raise ConfigError(f"label map {p}: item {i} is not a mapping")
                _add(
                    out,
                    item.get("source_label"),
                    item.get("label"),
                    item.get("kind"),
                    f"label map {p} item {i}",
                )
        else:
            raise ConfigError(f"label map {p}: expected a mapping or a list")
        for key, kind in dict(kinds).items():
            try:
                out.kinds[normalise_key(key)] = _check_kind(kind, f"label map {p}") or derive_kind(key)
            except InputError as exc:
                raise ConfigError(f"label map {p}: {exc}") from None
        return out
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text))
    cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    if "source_label" not in cols or "label" not in cols:
        raise ConfigError(f"label map {p}: needs the columns source_label,label[,kind]")
    for n, row in enumerate(reader, start=2):
        _add(
            out,
            row.get(cols["source_label"]),
            row.get(cols["label"]),
            row.get(cols.get("kind", ""), None),
            f"label map {p} line {n}",
        )
    return out
