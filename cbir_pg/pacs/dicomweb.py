"""``cbir-pg datasets import dicomweb URL``: import from a PACS over DICOMweb (``dicomweb-client``).

QIDO-RS finds the studies (``StudyDate`` range, Study Instance UIDs), their series (``Modality`` filter,
non-image series such as SR, SEG, PR skipped with their reason) and instances; WADO-RS retrieves each
instance not yet in the dataset, and :func:`cbir_pg.pacs.instances.instance_record` turns it into a record
keyed by its SOP Instance UID with its pixels in the managed store. The importer
(:func:`cbir_pg.datasets.importer.import_dataset`) does the rest, batch by batch.

Reliability: every request is retried with back-off (a restarting PACS); when the PACS stays unreachable
the import stops with :class:`PacsUnavailable`. What was committed stays, the dataset is left
``importing`` (evaluation refuses it), and the same command run again fetches only what is missing.
``--since last`` queries studies from the newest StudyDate of the last *complete* run on (inclusive: the
SOP key drops what is there), so an interrupted run never moves the cursor.

Credentials come from :mod:`cbir_pg.pacs.credentials`; ``cbir.dicom_source`` stores the URL only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cbir_pg.datasets.base import Adapter, Record, RowError, register_adapter
from cbir_pg.errors import CbirError, ConfigError
from cbir_pg.rules import is_on

#: logger ``cbir_pg.pacs.dicomweb``: one DEBUG line per retrieved instance, INFO per study
log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIES = 4
FIRST_DELAY = 0.5


class PacsUnavailable(CbirError):
    """The PACS could not be reached (or kept failing) after the retries."""


def parse_study_date(text: str | None) -> str | None:
    """``FROM-TO`` (``20240101-20241231``, ``2024-01-01..2024-12-31``; either end may be open) → the
    DICOM range ``YYYYMMDD-YYYYMMDD``; ``None`` for no filter."""
    import re

    if not text:
        return None
    t = text.strip()
    m = re.fullmatch(r"(\d{4}-?\d{2}-?\d{2})?\s*(?:-|\.\.)\s*(\d{4}-?\d{2}-?\d{2})?", t)
    if m is None:
        m1 = re.fullmatch(r"\d{4}-?\d{2}-?\d{2}", t)
        if m1 is None:
            raise ConfigError(f"--study-date: expected FROM-TO as YYYYMMDD-YYYYMMDD, got {text!r}")
        d = t.replace("-", "")
        return f"{d}-{d}"
    a, b = (g.replace("-", "") if g else "" for g in m.groups())
    if not a and not b:
        raise ConfigError(f"--study-date: give at least one end, got {text!r}")
    if a and b and a > b:
        raise ConfigError(f"--study-date: {a} is after {b}")
    return f"{a}-{b}"


def _split(value: Any) -> list[str]:
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


def _value(item: dict, tag: str) -> str | None:
    v = (item.get(tag) or {}).get("Value") or []
    return str(v[0]) if v else None


STUDY_UID, SERIES_UID, SOP_UID, MODALITY, STUDY_DATE = (
    "0020000D",
    "0020000E",
    "00080018",
    "00080060",
    "00080020",
)


def _http_status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


@register_adapter("dicomweb")
class DicomWebAdapter(Adapter):
    title = "DICOMweb PACS"
    single_label = True
    require_label = False
    identifying_ids = True
    wants_known = True
    options_help = {
        "modality": "only series of these modalities, e.g. CT,CR,DX",
        "study_date": "only studies in this StudyDate range FROM-TO (YYYYMMDD-YYYYMMDD, open ends allowed)",
        "study_uid": "only these Study Instance UIDs (comma-separated)",
        "since": "only studies from this StudyDate on (YYYYMMDD; `--since last` resolves it)",
        "label": "one source label for every image, e.g. CR/chest/normal (labels can be attached later)",
        "no_copy": "keep only a reference to each instance (no pixels); fetched again from the PACS on use",
        "fractions": "train,val,test fractions for the patient-wise split (default 0.7,0.1,0.2)",
    }
    salt: str = ""
    known: set[str] = set()

    @classmethod
    def resolve_root(cls, root):
        from cbir_pg.pacs.credentials import check_url

        return check_url(str(root))

    @classmethod
    def default_key(cls, root, options):
        return "pacs"

    def __init__(self, root, key, options):

        super().__init__(Path("."), key, options)
        self.url = str(root)
        self.modalities = {m.upper() for m in _split(self.options.get("modality"))}
        self.study_uids = _split(self.options.get("study_uid"))
        self.study_date = parse_study_date(self.options.get("study_date"))
        since = self.options.get("since")
        if since:
            since = str(since).replace("-", "")
            if len(since) != 8 or not since.isdigit():
                raise ConfigError(
                    f"--since: expected a date YYYYMMDD or 'last', got {self.options['since']!r}"
                )
            lo, _, hi = (self.study_date or "-").partition("-")
            self.study_date = f"{max(lo, since)}-{hi}"
        self.fractions = self.fractions_option()
        self._client = None
        self.copy = not is_on(self.options.get("no_copy"))

    def image_root(self) -> Path:
        from cbir_pg.config import get_settings

        return get_settings().image_root / self.key

    @property
    def client(self):
        if self._client is None:
            from dicomweb_client.api import DICOMwebClient

            from cbir_pg.pacs.credentials import load_credentials

            self._client = DICOMwebClient(self.url, session=load_credentials().session())
            self._client.set_http_retry_params(retry=False)  # one retry policy: _call's
        return self._client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` retried with exponential back-off on connection errors, timeouts and 5xx answers; a
        refused login is a one-line :class:`ConfigError`, the rest :class:`PacsUnavailable`. Messages
        carry the URL and the HTTP status, never a credential."""
        import requests

        delay = FIRST_DELAY
        for attempt in range(1, RETRIES + 1):
            try:
                return fn()
            except requests.exceptions.HTTPError as exc:
                status = _http_status(exc)
                if status in (401, 403):
                    raise ConfigError(
                        f"the PACS at {self.url} refused the credentials (HTTP {status}) for {what}; "
                        "see docs/pacs.md#credentials"
                    ) from None
                if status is not None and status < 500:
                    raise
                problem = f"HTTP {status}"
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                problem = type(exc).__name__
            if attempt < RETRIES:
                log.info("PACS %s failed (%s), retry %d in %.1f s", what, problem, attempt, delay)
                time.sleep(delay)
                delay *= 2
        raise PacsUnavailable(
            f"the PACS at {self.url} is unreachable ({problem} on {what}, {RETRIES} tries); what was "
            "imported is kept: run the same command again to continue"
        )

    def _studies(self) -> list[dict]:
        filters: dict[str, str] = {}
        if self.study_date:
            filters["StudyDate"] = self.study_date
        if self.study_uids:
            out = []
            for uid in self.study_uids:
                out += self._call(
                    "QIDO studies",
                    lambda uid=uid: self.client.search_for_studies(
                        search_filters={**filters, "StudyInstanceUID": uid}, get_remaining=True
                    ),
                )
            return out
        return self._call(
            "QIDO studies", lambda: self.client.search_for_studies(search_filters=filters, get_remaining=True)
        )

    def records(self) -> Iterator[Record | RowError]:
        import requests

        from cbir_pg.images import NON_IMAGE_MODALITIES
        from cbir_pg.pacs.instances import instance_record, instance_uri

        labels = [str(self.options["label"])] if self.options.get("label") else []
        retrieved = 0
        studies = sorted(
            self._studies(), key=lambda s: (_value(s, STUDY_DATE) or "", _value(s, STUDY_UID) or "")
        )
        for study in studies:
            st = _value(study, STUDY_UID)
            if not st:
                continue
            series = self._call(
                "QIDO series",
                lambda st=st: self.client.search_for_series(study_instance_uid=st, get_remaining=True),
            )
            log.info("study with %d series", len(series))
            for se_item in series:
                se, modality = _value(se_item, SERIES_UID), (_value(se_item, MODALITY) or "").upper()
                if not se or (self.modalities and modality not in self.modalities):
                    continue
                instances = self._call(
                    "QIDO instances",
                    lambda st=st, se=se: self.client.search_for_instances(
                        study_instance_uid=st, series_instance_uid=se, get_remaining=True
                    ),
                )
                for inst in instances:
                    sop = _value(inst, SOP_UID)
                    if not sop:
                        continue
                    uri = instance_uri(sop, self.salt, self.copy)
                    if uri in self.known or instance_uri(sop, self.salt, not self.copy) in self.known:
                        continue
                    if modality in NON_IMAGE_MODALITIES:
                        source = f"sop:{uri.split('/')[-1].split('.')[0]}"
                        yield RowError(
                            source, "dicom_not_an_image", f"{source}: a {modality} object is not an image"
                        )
                        continue
                    try:
                        ds = self._call(
                            "WADO retrieve",
                            lambda st=st, se=se, sop=sop: self.client.retrieve_instance(st, se, sop),
                        )
                    except requests.exceptions.HTTPError as exc:  # 4xx: gone since the search
                        source = f"sop:{uri.split('/')[-1].split('.')[0]}"
                        yield RowError(source, "pacs_http_error", f"{source}: HTTP {_http_status(exc)}")
                        continue
                    retrieved += 1
                    log.debug("retrieved instance %d", retrieved)
                    yield instance_record(
                        ds, self.salt, self.image_root(), labels=labels, copy=self.copy, server=self.url
                    )


def import_dicomweb(
    db,
    url: str,
    *,
    name: str | None = None,
    modality: str | None = None,
    study_date: str | None = None,
    study_uid: str | None = None,
    since: str | None = None,
    label: str | None = None,
    no_copy: bool = False,
    progress: bool = False,
    batch_size: int | None = None,
    **kwargs: Any,
):
    """Import (or continue importing) the PACS at ``url`` into dataset ``name`` (default ``pacs``); see
    the module docstring. ``since='last'`` continues from the last complete run's newest StudyDate.
    Returns the importer's :class:`~cbir_pg.datasets.importer.ImportSummary`."""
    from cbir_pg.datasets.importer import BATCH_SIZE, import_dataset
    from cbir_pg.db import queries
    from cbir_pg.db.identifiers import check_key
    from cbir_pg.pacs.credentials import check_url

    url = check_url(url)
    key = check_key(name or "pacs", "dataset")
    if since == "last":
        with db.connection() as conn:
            row = conn.execute(queries.get("pacs", "source_cursor"), {"key": key}).fetchone()
        since = row["last_study_date"].strftime("%Y%m%d") if row and row["last_study_date"] else None
    opts = {
        "modality": modality,
        "study_date": study_date,
        "study_uid": study_uid,
        "since": since,
        "label": label,
        "no_copy": "1" if no_copy else None,
    }
    summary = import_dataset(
        db,
        "dicomweb",
        url,
        name=key,
        progress=progress,
        batch_size=batch_size or BATCH_SIZE,
        **{k: v for k, v in opts.items() if v},
        **kwargs,
    )
    with db.connection() as conn:
        conn.execute(
            queries.get("pacs", "finish_source"),
            {"dataset_id": summary.dataset_id, "url": url, "copy": not no_copy},
        )
    return summary
