"""The project's own exception types.

Library code raises these; the CLI's single handler turns them into one line on stderr with exit code 1
(traceback only with ``--verbose``). Driver errors are translated into them at one boundary:
:func:`cbir_pg.db.database.db_errors` (built on :func:`cbir_pg.db.connect.translate`).
"""

from __future__ import annotations


class CbirError(Exception):
    """Base class for every error a user should see as one clear line."""


class ConfigError(CbirError):
    """Bad settings, options or environment."""


class DatabaseError(CbirError):
    """The database could not be reached or refused a statement."""


class ConnectionLostError(DatabaseError):
    """The server could not be reached or the connection broke (a restart, a network fault)."""


class NotFoundError(CbirError):
    """A named thing (dataset, encoder, image, run) does not exist."""


class WeightsMissingError(CbirError):
    """Pretrained weights are not available locally (and the hub cannot be reached)."""


class InputError(CbirError):
    """Bad input data: a corrupt file, an unknown label, a wrong vector dimension."""
