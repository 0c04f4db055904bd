"""``cbir-pg dicom listen``: a DICOM C-STORE SCP (``pynetdicom``) that imports what a PACS or a modality
pushes, so followers (``cbir-pg ingest --follow``) embed it within seconds.

How an instance travels:

1. The C-STORE handler writes the instance as received (``event.encoded_dataset()``) into the spool
   folder ``$CBIR_PG_HOME/spool/<dataset>/`` under a random name (a temporary name, then a rename) and
   answers Success: it is on disk before the sender hears so.
2. The main thread moves the spooled files into a batch folder about once a second and imports it with
   the ``dicom-received`` adapter (:class:`ReceivedAdapter`): each instance keyed by its SOP Instance UID
   (a re-sent instance is not imported twice), its pixels in the managed store, no name at rest; the
   batch folder is deleted after the import committed. A batch folder left by a crash is imported at
   the next start. A malformed instance (not parseable, no SOP Instance UID, no pixels) is an error row
   in ``cbir.error``, never a crash; errors of earlier batches are kept.
3. The insert fires ``cbir_new_images``; followers embed.

Only calling AE titles in ``allowed_aets`` may associate (others are rejected) when it is given.
``stop`` (SIGTERM in the CLI) closes the listening socket, lets the associations in progress finish,
imports what they sent and returns.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cbir_pg.datasets.base import Adapter, Record, RowError, register_adapter
from cbir_pg.errors import ConfigError

#: logger ``cbir_pg.pacs.listener``: associations and batches (``CBIR_PG_LOG_LEVEL=INFO``)
log = logging.getLogger(__name__)


@register_adapter("dicom-received")
class ReceivedAdapter(Adapter):
    """A batch folder of instances received by ``cbir-pg dicom listen`` (any file names)."""

    title = "DICOM received by C-STORE"
    single_label = True
    require_label = False
    identifying_ids = True
    wants_known = True
    incremental = True
    options_help = {
        "label": "one source label for every image received",
        "fractions": "train,val,test fractions for the patient-wise split (default 0.7,0.1,0.2)",
    }
    salt: str = ""
    known: set[str] = set()

    @classmethod
    def default_key(cls, root, options):
        return "received"

    def image_root(self) -> Path:
        from cbir_pg.config import get_settings

        return get_settings().image_root / self.key

    def records(self) -> Iterator[Record | RowError]:
        import pydicom

        from cbir_pg.pacs.instances import instance_record, instance_uri

        labels = [str(self.options["label"])] if self.options.get("label") else []
        seen: set[str] = set()  # an instance sent twice in one batch is imported once, silently
        for f in sorted(self.root.glob("*.dcm")):
            source = f"received:{f.stem[:12]}"
            try:
                ds = pydicom.dcmread(f, force=True)
                sop = str(ds.get("SOPInstanceUID", "") or "").strip()
            except Exception as exc:  # pydicom raises many types on broken data
                yield RowError(source, "corrupt_dicom", f"{source}: {type(exc).__name__}")
                continue
            if sop and (instance_uri(sop, self.salt) in self.known or sop in seen):
                continue
            seen.add(sop)
            rec = instance_record(ds, self.salt, self.image_root(), labels=labels)
            if isinstance(rec, RowError) and rec.source == "sop:missing":
                rec = RowError(source, rec.reason, f"{source}: {rec.message}")
            yield rec


@dataclass
class ListenSummary:
    dataset: str
    port: int
    associations: int = 0
    received: int = 0
    imported: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def spool_dir(dataset: str) -> Path:
    from cbir_pg.config import get_settings

    return get_settings().home / "spool" / dataset


class Listener:
    """The SCP and its importer; :meth:`serve` runs until ``stop`` is set (see the module docstring)."""

    def __init__(
        self,
        db,
        *,
        dataset: str,
        port: int = 11112,
        ae_title: str = "CBIRPG",
        allowed_aets: list[str] | None = None,
        bind: str = "127.0.0.1",
        label: str | None = None,
    ):
        from cbir_pg.db.identifiers import check_key

        if not 1 <= len(ae_title.strip()) <= 16:
            raise ConfigError(f"--ae-title must have 1 to 16 characters, got {ae_title!r}")
        self.db, self.dataset, self.port, self.bind = db, check_key(dataset, "dataset"), port, bind
        self.ae_title = ae_title.strip()
        self.allowed = [a.strip() for a in allowed_aets or [] if a.strip()]
        self.label = label
        self.spool = spool_dir(self.dataset)
        self.summary = ListenSummary(self.dataset, port)
        self.arrived = threading.Event()
        self.lock = threading.Lock()
        self.server = None

    # ---------------------------------------------------------------- the SCP (association threads)
    def _on_store(self, event) -> int:
        name = uuid.uuid4().hex
        tmp = self.spool / f".{name}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(event.encoded_dataset(include_meta=True))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.spool / f"{name}.dcm")
        except OSError:
            log.exception("cannot spool a received instance")
            tmp.unlink(missing_ok=True)
            return 0xA700  # Out of Resources
        with self.lock:
            self.summary.received += 1
        self.arrived.set()
        return 0x0000

    def _on_assoc(self, event) -> None:
        with self.lock:
            self.summary.associations += 1
        log.info("association from %s", event.assoc.requestor.ae_title)

    def _ae(self):
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        if self.allowed:
            ae.require_calling_aet = self.allowed
        return ae

    def start(self) -> None:
        """Open the port (non-blocking: associations run in their own threads)."""
        from pynetdicom import evt

        self.spool.mkdir(parents=True, exist_ok=True)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ACCEPTED, self._on_assoc)]
        try:
            self.server = self._ae().start_server((self.bind, self.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.bind}:{self.port}: {exc.strerror or exc}") from None
        self.port = self.summary.port = self.server.server_address[1]
        log.info("listening on %s:%d as %s", self.bind, self.port, self.ae_title)

    # ---------------------------------------------------------------- the importer (main thread)
    def import_pending(self) -> int:
        """Import every complete spooled file (and batch folders a crash left); returns images imported."""
        from cbir_pg.datasets.importer import import_dataset

        files = sorted(self.spool.glob("*.dcm"))
        if files:
            batch = self.spool / f"batch-{uuid.uuid4().hex[:12]}"
            batch.mkdir()
            for f in files:
                os.replace(f, batch / f.name)
        imported = 0
        for folder in sorted(p for p in self.spool.glob("batch-*") if p.is_dir()):
            opts = {"label": self.label} if self.label else {}
            s = import_dataset(self.db, "dicom-received", folder, name=self.dataset, progress=False, **opts)
            imported += s.imported
            with self.lock:
                self.summary.imported += s.imported
                for k, v in s.errors.items():
                    self.summary.errors[k] = self.summary.errors.get(k, 0) + v
            shutil.rmtree(folder, ignore_errors=True)
        return imported

    def serve(self, stop: threading.Event, *, idle: float = 1.0) -> ListenSummary:
        started = time.monotonic()
        if self.server is None:
            self.start()
        try:
            self.import_pending()  # what a crash left behind
            while not stop.is_set():
                if self.arrived.wait(timeout=idle):
                    self.arrived.clear()
                    time.sleep(0.2)  # let a burst of instances land in one batch
                    self.import_pending()
        finally:
            self.close()
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def close(self) -> None:
        """Stop accepting, let the associations in progress finish (up to 5 minutes), import what they
        sent."""
        if self.server is None:
            return
        active = list(self.server.active_associations)
        self.server.shutdown()
        self.server = None
        for assoc in active:
            assoc.join(timeout=300)
        self.import_pending()
