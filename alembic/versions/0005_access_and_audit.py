"""Who may see which dataset, and the audit trail of ``cbir-pg serve`` (issue 22).

* ``cbir.dataset_grant``: ``(dataset_id, role_name)``, written by ``cbir-pg db roles grant-dataset``;
  row-level security (policies in ``sql/schema/92_access.sql``) shows a reader only the images, patients,
  labels and datasets granted to a role it has the privileges of.
* ``cbir.audit_log``: append-only (a trigger refuses update, delete and truncate), written by the
  server's ``cbir_web`` role, read by the owner with ``cbir-pg audit``.
* row-level security enabled on ``cbir.dataset``, ``cbir.image``, ``cbir.patient``, ``cbir.image_label``.

Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import sql_steps  # alembic/sqlfile.py: runs alembic/sql/<stem>.sql, <stem>.down.sql

revision = "0005"
down_revision = "0003"
upgrade, downgrade = sql_steps("0005_access_and_audit")
