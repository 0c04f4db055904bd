"""The least-privilege connection ``cbir-pg serve`` runs on.

The owner's connection is used once, at start-up, to give the ``cbir_web`` role (defined with its grants
in ``sql/schema/90_roles.sql``) LOGIN and a password, and to grant it SELECT on each embedding table.
Everything the server does afterwards runs as ``cbir_web``: it can search and read image metadata, but
reading a patient key, an image uri or a dataset root fails in PostgreSQL itself.

The password is generated once and kept in ``$CBIR_PG_HOME/serve/web-password`` (mode 0600), so a
restarted server, or a second server on the same cluster and home, keeps working with the same secret.
It works under ``trust`` (the password is then not asked for) and under ``scram-sha-256``.
"""

from __future__ import annotations

from pathlib import Path

from psycopg import sql

from cbir_pg.db import identifiers, queries
from cbir_pg.db.connect import connect, login_dsn
from cbir_pg.db.database import dict_cursor, scalar
from cbir_pg.db.readonly import role_setup, stored_password
from cbir_pg.errors import ConfigError

ROLE = "cbir_web"


def web_password(home: Path) -> str:
    """The role's password: read from the home, or generated there once (0600)."""
    return stored_password(Path(home) / "serve" / "web-password")


def web_dsn(owner_dsn: str, password: str) -> str:
    """The owner's DSN with the user and password replaced by the web role's."""
    return login_dsn(owner_dsn, ROLE, password)


def prepare_web_role(owner_dsn: str, home: Path) -> str:
    """Give ``cbir_web`` LOGIN, its password, read access (as a reader) to every embedding table and the
    right to act as each reader login; return its DSN.

    Needs an owner that may alter roles (the embedded server's superuser does). A database that was
    never migrated has no such role: that is one clear error, not a half-working server.
    """
    password = web_password(home)
    refused = (
        "the database user cannot set up the cbir_web role (it needs CREATEROLE): ask an administrator "
        "to run `alter role cbir_web login password ...` and pass that role's DSN with --web-dsn"
    )
    with role_setup(connect(owner_dsn, autocommit=True, vector=False), refused) as conn:
        if not scalar(conn, queries.get("serve", "web_role_exists")):
            raise ConfigError("the database has no cbir_web role: run `cbir-pg db migrate` first")
        conn.execute(
            queries.get(
                "serve", "set_web_password", role=sql.Identifier(ROLE), password=sql.Literal(password)
            )
        )
        for row in dict_cursor(conn).execute(queries.get("serve", "models")).fetchall():
            table = identifiers.embedding_table(row["model"])
            conn.execute(
                queries.get("serve", "grant_embedding_read", table=table, role=sql.Identifier("cbir_reader"))
            )
        # logged-in readers: the server acts as them with `set local role` (reader logins made outside
        # `cbir-pg db roles add` since the last migrate included)
        conn.execute(queries.get("serve", "grant_logins_to_web"))
    return web_dsn(owner_dsn, password)
