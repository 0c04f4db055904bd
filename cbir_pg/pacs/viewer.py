"""The "open in viewer" link: ``CBIR_PG_VIEWER_URL``, a URL template filled with an image's DICOM UIDs.

Placeholders: ``{study}``, ``{series}``, ``{sop}`` (Study, Series and SOP Instance UID) and ``{server}``
(the DICOMweb base URL the image was imported from; empty for images received by ``cbir-pg dicom
listen``), each URL-encoded. Examples::

    CBIR_PG_VIEWER_URL='http://pacs:8042/ohif/viewer?StudyInstanceUIDs={study}'          # Orthanc's OHIF
    CBIR_PG_VIEWER_URL='https://viewer.example.org/viewer/{study}?series={series}'        # any web viewer

Images that came from no PACS (benchmarks, folders) get no link. The page and the API read the UIDs only
through ``cbir.dicom_ref_v1`` (sql/schema/95_pacs.sql): the column ``cbir.image.dicom_uids`` alone, under
the same row-level security as every image read.
"""

from __future__ import annotations

import os
import string
from typing import Any

from cbir_pg.errors import ConfigError

ENV = "CBIR_PG_VIEWER_URL"
FIELDS = ("study", "series", "sop", "server")


def viewer_template(env: dict[str, str] | None = None) -> str | None:
    """The configured template, checked (http(s), known placeholders only), or ``None``."""
    t = ((os.environ if env is None else env).get(ENV) or "").strip()
    if not t:
        return None
    if not t.startswith(("http://", "https://")):
        raise ConfigError(f"{ENV} must be an http:// or https:// URL template, got {t!r}")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(t) if f is not None}
    except ValueError as exc:
        raise ConfigError(f"{ENV}: {exc}") from None
    unknown = names - set(FIELDS)
    if unknown:
        raise ConfigError(f"{ENV}: unknown placeholder(s) {sorted(unknown)}; use {', '.join(FIELDS)}")
    return t


def viewer_url(template: str, ref: dict[str, Any]) -> str | None:
    """The link for one image's reference (``study``, ``series``, ``sop``, ``server``), or ``None``
    when the template needs a UID the image lacks."""
    from urllib.parse import quote

    values = {k: quote(str(ref.get(k) or ""), safe="") for k in FIELDS}
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    if any(not values[n] for n in names if n != "server"):
        return None
    return template.format(**values)


def viewer_links(conn, image_ids: list[int], template: str | None = None) -> dict[int, str]:
    """``{image_id: link}`` for the images among ``image_ids`` that came from a PACS."""
    from cbir_pg.db import queries

    template = template if template is not None else viewer_template()
    if not template or not image_ids:
        return {}
    out: dict[int, str] = {}
    for r in conn.execute(queries.get("pacs", "dicom_refs"), {"ids": list(image_ids)}).fetchall():
        link = viewer_url(template, r)
        if link:
            out[int(r["image_id"])] = link
    return out
