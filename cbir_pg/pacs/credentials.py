"""Credentials for a PACS: from the environment or a secret file, never printed, never stored.

Order: ``CBIR_PG_PACS_TOKEN`` (bearer), ``CBIR_PG_PACS_USER`` with ``CBIR_PG_PACS_PASSWORD`` (basic), then
the file named by ``CBIR_PG_PACS_SECRET_FILE``, which must not be readable by group or others (mode 0600
or 0400) and holds ``KEY=VALUE`` lines with ``token`` or ``user`` and ``password``. A URL with
``user:password@`` in it is refused: it would end up in logs and in ``cbir.dicom_source``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cbir_pg.errors import ConfigError

TOKEN_ENV = "CBIR_PG_PACS_TOKEN"
USER_ENV = "CBIR_PG_PACS_USER"
PASSWORD_ENV = "CBIR_PG_PACS_PASSWORD"
FILE_ENV = "CBIR_PG_PACS_SECRET_FILE"


@dataclass(frozen=True)
class Credentials:
    """``kind`` is ``none``, ``basic`` or ``bearer``; the secret fields never appear in ``repr``."""

    kind: str = "none"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = "none"

    def session(self):
        """A ``requests.Session`` that sends these credentials."""
        import requests

        s = requests.Session()
        if self.kind == "basic":
            s.auth = (self.user or "", self.password or "")
        elif self.kind == "bearer":
            s.headers["Authorization"] = f"Bearer {self.token}"
        return s


def _read_file(path: Path) -> dict[str, str]:
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"{FILE_ENV}: cannot read {path}: {exc.strerror or exc}") from None
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{FILE_ENV}: {path} is readable by group or others (mode {st.st_mode & 0o777:o}); chmod 600 {path}"
        )
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, sep, v = line.partition("=")
        if not sep:
            raise ConfigError(f"{FILE_ENV}: {path}: expected KEY=VALUE lines (token=, user=, password=)")
        out[k.strip().lower()] = v.strip()
    return out


def load_credentials(env: dict[str, str] | None = None) -> Credentials:
    """The PACS credentials (see the module docstring); ``Credentials()`` (none) when nothing is set."""
    e = os.environ if env is None else env
    if e.get(TOKEN_ENV):
        return Credentials("bearer", token=e[TOKEN_ENV], source=TOKEN_ENV)
    if e.get(USER_ENV):
        if not e.get(PASSWORD_ENV):
            raise ConfigError(f"{USER_ENV} is set but {PASSWORD_ENV} is not")
        return Credentials("basic", user=e[USER_ENV], password=e[PASSWORD_ENV], source=USER_ENV)
    if e.get(FILE_ENV):
        path = Path(e[FILE_ENV]).expanduser()
        values = _read_file(path)
        if values.get("token"):
            return Credentials("bearer", token=values["token"], source=f"{FILE_ENV} ({path})")
        if values.get("user") and values.get("password"):
            return Credentials(
                "basic", user=values["user"], password=values["password"], source=f"{FILE_ENV} ({path})"
            )
        raise ConfigError(f"{FILE_ENV}: {path} holds neither token= nor user= and password=")
    return Credentials()


def check_url(url: str) -> str:
    """``url`` without a trailing slash; refused when it is not http(s) or carries credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"not a DICOMweb URL (http:// or https://): {url!r}")
    if parts.username or parts.password:
        raise ConfigError(
            "the URL carries credentials: pass them in the environment "
            f"({USER_ENV}/{PASSWORD_ENV}, {TOKEN_ENV}) or a 0600 file ({FILE_ENV}), never in the URL"
        )
    if parts.query or parts.fragment:
        raise ConfigError("the DICOMweb URL must not have a query or fragment")
    return url.rstrip("/")
