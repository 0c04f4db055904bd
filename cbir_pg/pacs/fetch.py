"""Images imported with ``--no-copy``: the managed store holds a small reference file instead of the pixels.

``<k[:2]>/<k>.dcmref`` is JSON ``{"dicomweb": URL, "study": UID, "series": UID, "sop": UID}``: no name,
no pixel. :func:`cbir_pg.images.decode_file` hands such a file to :func:`retrieve_reference`, which retrieves
the instance again over WADO-RS (credentials from :mod:`cbir_pg.pacs.credentials`) and decodes it like any
DICOM, so ingest, search and the page read it as if it were a file. It needs the PACS to be up; the
pixel hash recorded at import still guards what comes back.
"""

from __future__ import annotations

import json
from pathlib import Path

SUFFIX = ".dcmref"


def write_reference(path: Path, url: str, study: str, series: str, sop: str) -> None:
    """Write the reference file atomically (unless it exists)."""
    import os
    import uuid

    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps({"dicomweb": url, "study": study, "series": series, "sop": sop}))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class FetchError(Exception):
    """A reference that could not be read or fetched: ``reason`` (a cbir.error reason) and ``detail``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def retrieve_reference(data: bytes):
    """The pydicom ``Dataset`` the reference file's bytes name, retrieved from its PACS now;
    :class:`FetchError` when the file is no reference or the PACS does not answer.
    :func:`cbir_pg.images.decode_file` decodes it like any DICOM."""
    import requests

    try:
        ref = json.loads(data)
        url, study, series, sop = ref["dicomweb"], ref["study"], ref["series"], ref["sop"]
    except (ValueError, KeyError, TypeError):
        raise FetchError("bad_reference", "not a DICOMweb reference file") from None
    from dicomweb_client.api import DICOMwebClient

    from cbir_pg.pacs.credentials import check_url, load_credentials

    try:
        client = DICOMwebClient(check_url(url), session=load_credentials().session())
        client.set_http_retry_params(retry=False)  # a reader waiting on the page: fail fast
        return client.retrieve_instance(study, series, sop)
    except requests.exceptions.RequestException as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        what = f"HTTP {status}" if status else type(exc).__name__
        raise FetchError("pacs_unavailable", f"cannot fetch it from {url} ({what})") from None
