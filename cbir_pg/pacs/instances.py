"""One DICOM instance from a PACS (retrieved over DICOMweb or received by C-STORE) → an import record.

The image is keyed by its SOP Instance UID: its ``cbir.image.uri`` is ``<k[:2]>/<k>.png`` in the managed
store, where ``k`` is the salted hash of the SOP Instance UID (:func:`instance_uri`), so the unique
``(dataset_id, uri)`` makes a rerun import nothing twice and no path or name from the source is stored.
The pixels are decoded once (:func:`cbir_pg.images.decode_dicom_dataset`: colour, compressed syntaxes,
non-image objects refused with their reason) and written as a PNG there. The UIDs themselves (Study,
Series, SOP Instance, and the StudyDate for ``--since last``) are kept in ``image.extra -> 'dicom_uids'``:
they are the image's reference back to the PACS (the viewer link). Patient id and Study UID as a patient or
study key are salted hashes as for every DICOM import; coded attributes only, names never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cbir_pg.datasets.base import Record, RowError
from cbir_pg.datasets.dicom import Header, tag


def instance_key(sop_uid: str, salt: str) -> str:
    """The salted hash that names an instance's managed file (32 hex characters)."""
    from cbir_pg.datasets.splits import hash_patient_id

    return hash_patient_id(f"sop:{sop_uid}", salt)[:32]


def instance_uri(sop_uid: str, salt: str, copy: bool = True) -> str:
    """``<k[:2]>/<k>.png`` (a managed copy) or ``<k[:2]>/<k>.dcmref`` (``--no-copy``: a reference)."""
    k = instance_key(sop_uid, salt)
    return f"{k[:2]}/{k}.{'png' if copy else 'dcmref'}"


def instance_record(
    ds,
    salt: str,
    image_root: Path,
    *,
    labels: list[str] | None = None,
    copy: bool = True,
    server: str | None = None,
) -> Record | RowError:
    """The record of one instance (``ds``: a pydicom ``Dataset`` with pixel data), or a
    :class:`RowError` (source ``sop:<k>``, never a name) when it has no SOP Instance UID or no image.
    ``copy=False`` (``--no-copy``, needs ``server``) writes a reference file instead of the pixels
    (:mod:`cbir_pg.pacs.fetch`)."""
    from cbir_pg.images import DecodeError, decode_dicom_dataset

    sop = tag(ds, "SOPInstanceUID")
    if not sop:
        return RowError("sop:missing", "dicom_no_sop_uid", "the instance has no SOP Instance UID")
    uri = instance_uri(sop, salt, copy)
    source = f"sop:{instance_key(sop, salt)}"
    try:
        pixels = decode_dicom_dataset(ds, source)
    except DecodeError as exc:
        return RowError(source, exc.reason, f"{source}: {exc.reason}: {exc.detail}")
    except Exception as exc:  # a malformed element pydicom trips over while decoding
        return RowError(source, "corrupt_dicom", f"{source}: {type(exc).__name__}")
    h = Header.read(ds)
    uids: dict[str, Any] = {"study": h.study, "series": h.series, "sop": sop}
    date = tag(ds, "StudyDate")
    if date and len(date) == 8 and date.isdigit():
        uids["date"] = date
    if server:
        uids["server"] = server
    write = _writer(Path(image_root) / uri, pixels, copy, (server or "", h.study or "", h.series or "", sop))
    extra = {"dicom_modality": h.raw_modality or None, "dicom_uids": uids}
    return h.record(uri, list(labels or []), f"sop:{uri}", extra, pixels, write)


def _writer(path: Path, pixels, copy: bool, reference: tuple[str, str, str, str]):
    """Writes the pixels as a PNG, or (``copy=False``) a reference to the instance on its server."""

    def write() -> None:
        if copy:
            from cbir_pg.datasets.store import write_png

            write_png(path, pixels)
        else:
            from cbir_pg.pacs.fetch import write_reference

            write_reference(path, *reference)

    return write
