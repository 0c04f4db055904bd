"""Who may see which dataset, and the audit trail of ``cbir-pg serve`` (issue 22).

The SQL is in ``alembic/sql/0005_access_and_audit.sql`` (and ``.down.sql``).

* ``cbir.dataset_grant``: ``(dataset_id, role_name)``, written by ``cbir-pg db roles grant-dataset``;
  row-level security (policies in ``sql/schema/92_access.sql``) shows a reader only the images, patients,
  labels and datasets granted to a role it has the privileges of.
* ``cbir.audit_log``: append-only (a trigger refuses update, delete and truncate), written by the
  server's ``cbir_web`` role, read by the owner with ``cbir-pg audit``.
* row-level security enabled on ``cbir.dataset``, ``cbir.image``, ``cbir.patient``, ``cbir.image_label``.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import read_sql  # alembic/sqlfile.py

from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("0005_access_and_audit.sql"))


def downgrade() -> None:
    op.execute(read_sql("0005_access_and_audit.down.sql"))
