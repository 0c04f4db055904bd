"""Seeded, deterministic, patient-wise splits.

A patient's split is a pure function of ``(seed, patient key)``: the first 60 bits of
``sha256(f"{seed}:{patient_key}")`` give a number ``u`` in [0, 1), and cumulative fractions pick the
split. So every image of a patient lands in the same split (no patient crosses splits), the result
never depends on row order or on what else is in the file (streaming: no pass over all patients
first), and the same input with the same seed gives the same splits on every machine. Fractions are
met in expectation, not exactly (a 90:10 split of 1,000 patients gives about 900:100).

The raw source patient id is hashed here, before any salted hashing for storage, so splits do not
depend on the installation's salt.
"""

from __future__ import annotations

import hashlib

from cbir_pg.rules import SPLITS

#: ``trainval`` pool: the paper's patient-wise 90:10 train/val split of the official train data.
TRAINVAL_FRACTIONS = (0.9, 0.1, 0.0)
#: data without any official split (image folders, manifests, DICOM folders).
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


def unit_hash(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 4) / float(1 << 60)


def check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    """Three finite, non-negative numbers summing to 1 (``nan`` compares false with everything, so it is
    refused explicitly: it would otherwise pass and send every patient to the last split)."""
    import math

    from cbir_pg.errors import ConfigError

    ok = (
        len(fractions) == 3
        and all(isinstance(f, int | float) and math.isfinite(f) and f >= 0 for f in fractions)
        and abs(sum(fractions) - 1.0) <= 1e-6
    )
    if not ok:
        raise ConfigError(
            f"split fractions {','.join(map(str, fractions))} must be three finite, non-negative numbers"
            " summing to 1, e.g. 0.7,0.1,0.2"
        )
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def parse_fractions(text: str) -> tuple[float, float, float]:
    from cbir_pg.errors import ConfigError

    try:
        vals = tuple(float(x) for x in str(text).split(","))
    except ValueError:
        raise ConfigError(f"split fractions {text!r}: expected three numbers, e.g. 0.7,0.1,0.2") from None
    if len(vals) != 3:
        raise ConfigError(f"split fractions {text!r}: expected three numbers, e.g. 0.7,0.1,0.2")
    return check_fractions(vals)  # type: ignore[arg-type]


def assign_split(
    patient_key: str, seed: int, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> str:
    """The split of every image of ``patient_key`` (see the module docstring)."""
    u = unit_hash(patient_key, seed)
    edge = 0.0
    for name, frac in zip(SPLITS, fractions, strict=True):
        edge += frac
        if u < edge:
            return name
    return next(name for name, frac in reversed(list(zip(SPLITS, fractions, strict=True))) if frac > 0)


def hash_patient_id(raw: str, salt: str) -> str:
    """Salted sha256 of a source patient id (what is stored where an id identifies a person)."""
    return hashlib.sha256(f"{salt}:{raw}".encode()).hexdigest()


#: environment variables that give the installation's salt from outside the database
SALT_ENV = "CBIR_PG_SALT"
SALT_FILE_ENV = "CBIR_PG_SALT_FILE"
MIN_SALT_CHARS = 32


def external_salt() -> tuple[str, str] | None:
    """``(salt, source)`` from ``CBIR_PG_SALT`` or the file named by ``CBIR_PG_SALT_FILE`` (first line,
    stripped), or ``None``: then the salt in ``cbir.installation`` is used.

    A salt kept outside the database is not in a dump of it, so a short numeric patient id cannot be
    recovered from its stored hash by trying every id with the dumped salt."""
    import os
    from pathlib import Path

    from cbir_pg.errors import ConfigError

    value, source = os.environ.get(SALT_ENV), SALT_ENV
    if not value and os.environ.get(SALT_FILE_ENV):
        path = Path(os.environ[SALT_FILE_ENV]).expanduser()
        try:
            value = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise ConfigError(f"{SALT_FILE_ENV}: cannot read the salt file {path}: {exc}") from None
        source = f"{SALT_FILE_ENV} ({path})"
    if not value:
        return None
    value = value.strip()
    if len(value) < MIN_SALT_CHARS:
        raise ConfigError(
            f"{source}: the salt must have at least {MIN_SALT_CHARS} characters (e.g. openssl rand -hex 32)"
        )
    return value, source
