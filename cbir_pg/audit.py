"""The audit trail of ``cbir-pg serve`` (``cbir.audit_log``, revision 0005), read by the owner.

Every page view, search, upload, image, thumbnail and pixel fetch and every login of the server is one
append-only row: who (the database role, how they were authenticated, from which address), when, what
(action, method, path, HTTP status), which image ids (the query and every neighbour shown) and which
filters (model, k, split, dataset, ...). A trigger refuses update, delete and truncate; readers cannot
read it; only the server's ``cbir_web`` role may insert. Uploaded pixels are never stored, here or
anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cbir_pg.db import queries
from cbir_pg.db.database import Database
from cbir_pg.errors import ConfigError

#: the most rows one call returns
MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    auth: str
    address: str | None
    method: str
    path: str
    action: str
    status: int | None
    image_ids: list[int]
    filters: dict[str, Any]


def read_audit(
    db: Database,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str | None = None,
    limit: int = MAX_ROWS,
) -> list[AuditRow]:
    """The audit rows in ``[since, until)`` (of ``actor`` when given), oldest first."""
    from psycopg.rows import class_row

    if since is not None and until is not None and since >= until:
        raise ConfigError(f"--since ({since}) must be before --until ({until})")
    if not 1 <= limit <= MAX_ROWS:
        raise ConfigError(f"--limit must be between 1 and {MAX_ROWS}")
    params = {"since": since, "until": until, "actor": actor, "limit": limit}
    with db.connection(vector=False) as conn, conn.cursor(row_factory=class_row(AuditRow)) as cur:
        return cur.execute(queries.get("audit", "rows"), params).fetchall()
