"""The PACS service (docs/pacs.md): import over DICOMweb, receive by C-STORE, link back to a viewer.

* :mod:`cbir_pg.pacs.credentials`: basic or bearer credentials from the environment or a 0600 file;
* :mod:`cbir_pg.pacs.instances`: one received or retrieved DICOM instance → an import record, keyed by its
  SOP Instance UID, its pixels in the managed store, no name or path from the source at rest;
* :mod:`cbir_pg.pacs.dicomweb`: the ``dicomweb`` import adapter (QIDO-RS search, WADO-RS retrieve);
* :mod:`cbir_pg.pacs.listener`: ``cbir-pg dicom listen``, a C-STORE SCP;
* :mod:`cbir_pg.pacs.labels`: attach labels to imported instances later from a CSV;
* :mod:`cbir_pg.pacs.viewer`: the "open in viewer" link (``CBIR_PG_VIEWER_URL``).
"""
