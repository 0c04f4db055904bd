"""What the pages and the API read, on ``cbir_web`` connections, each request's queries under ``set local role``
of its actor (:class:`~cbir_pg.app.serve.auth.Actor`), so row-level security shows a person only the
datasets granted to them; the same SQL API the CLI's search uses
(``cbir.similar_images`` / ``cbir.similar_to_vector``), the same decode path (:mod:`cbir_pg.images`) and
the same on-the-fly embedding (:func:`cbir_pg.search._embed_file`, checked against the stored config hash).

Rows are read by name and turned into plain dicts holding only what a page may show: never a patient key,
an image uri, a dataset root or a free-text tag (the role could not read them anyway).
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.sql
from psycopg.rows import dict_row

from cbir_pg.db import identifiers, queries
from cbir_pg.db.connect import connect, translate
from cbir_pg.errors import CbirError, ConfigError, NotFoundError

if TYPE_CHECKING:
    from cbir_pg.app.serve.auth import Actor

SPLITS = ("train", "val", "test")
SEXES = ("F", "M", "O")
#: the most neighbours a page or an API call returns
MAX_K = 100
#: with a filter the SQL function does not take (label, sex, age), candidates are over-fetched in
#: growing batches and filtered in rank order; this caps how far down the ranking that goes
MAX_CANDIDATES = 20000
_MODALITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/+-]{0,31}")


@dataclass(frozen=True)
class Filters:
    """A search's filters, validated; ``None`` means "any"."""

    split: str | None = None
    dataset: str | None = None
    modality: str | None = None
    label: str | None = None
    sex: str | None = None
    age_min: float | None = None
    age_max: float | None = None
    exclude_same_patient: bool = False

    def __post_init__(self) -> None:
        if self.split is not None and self.split not in SPLITS:
            raise ConfigError(f"invalid split {self.split!r}: use train, val or test")
        if self.dataset is not None:
            identifiers.check_key(self.dataset, "dataset")
        if self.modality is not None and not _MODALITY.fullmatch(self.modality):
            raise ConfigError(f"invalid modality {self.modality!r}")
        if self.label is not None and (len(self.label) > 200 or "/" not in self.label):
            raise ConfigError(f"invalid label {self.label!r}: use a key like XR/chest/pneumonia")
        if self.sex is not None and self.sex not in SEXES:
            raise ConfigError(f"invalid sex {self.sex!r}: use F, M or O")
        for name in ("age_min", "age_max"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < 150:
                raise ConfigError(f"{name.replace('_', ' ')} must be between 0 and 150, got {v}")
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ConfigError(f"age range is empty: {self.age_min} > {self.age_max}")

    @property
    def post(self) -> bool:
        """Whether a filter applies that ``cbir.similar_*`` does not take."""
        return any(v is not None for v in (self.label, self.sex, self.age_min, self.age_max))

    def keeps(self, hit: dict[str, Any]) -> bool:
        if self.label is not None and hit["label"] != self.label:
            return False
        if self.sex is not None and hit["sex"] != self.sex:
            return False
        age = hit["age"]
        if self.age_min is not None and (age is None or age < self.age_min):
            return False
        return not (self.age_max is not None and (age is None or age > self.age_max))

    def as_params(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}


def check_k(k: int) -> int:
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be between 1 and {MAX_K}, got {k!r}")
    return k


def _sql_error(exc: psycopg.Error) -> CbirError:
    """The SQL API's own errors as the project's types: unknown thing → NotFound, bad value → Config."""
    msg = (exc.diag.message_primary if exc.diag else None) or str(exc).splitlines()[0]
    if isinstance(exc, psycopg.errors.NoDataFound):
        return NotFoundError(msg)
    if isinstance(exc, psycopg.errors.InvalidParameterValue | psycopg.errors.InvalidTextRepresentation):
        return ConfigError(msg)
    return translate(exc)


class Store:
    """A small pool of ``cbir_web`` connections and the reads the server makes on them."""

    def __init__(self, dsn: str, size: int = 4):
        self._dsn = dsn
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._embed_lock = threading.Lock()
        with self.conn(None) as c:  # fail at start-up, not on the first request
            c.execute("select 1")

    @contextmanager
    def conn(self, actor: Actor | None) -> Iterator[psycopg.Connection]:
        """A connection for one request, acting as ``actor``: ``set local role`` to the actor's role
        (``None`` or the owner's session: the server's own ``cbir_web``). Read-only work, so it is rolled
        back (which also resets the role) and returned to the pool."""
        with self._slots:
            try:
                c = self._idle.get_nowait()
            except queue.Empty:
                c = connect(self._dsn, row_factory=dict_row)
            try:
                if actor is not None and actor.role is not None:
                    c.execute(queries.get("serve", "set_role", role=psycopg.sql.Identifier(actor.role)))
                yield c
            except psycopg.Error as exc:
                raise _sql_error(exc) from None
            finally:
                if c.closed or c.broken:
                    pass
                else:
                    try:
                        c.rollback()
                        self._idle.put(c)
                    except psycopg.Error:
                        c.close()

    # ------------------------------------------------------------------ identities
    def role_oid(self, name: str) -> int | None:
        """The oid of login role ``name`` if it may use the page (a reader cbir_web may act as)."""
        with self.conn(None) as c:
            row = c.execute(queries.get("serve", "reader_oid"), {"name": name}).fetchone()
        return int(row["oid"]) if row else None

    def check_login(self, name: str, password: str) -> int:
        """PostgreSQL's verdict on ``name``/``password``: a connection is opened as that role over the
        server's own path (its scram-sha-256 ``pg_hba.conf`` line), then closed. Returns the role's oid;
        raises :class:`~cbir_pg.app.serve.auth.LoginRefused` (one message whatever went wrong; the
        password is never logged, shown or kept)."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        from cbir_pg.app.serve.auth import LoginRefused

        refused = LoginRefused("wrong user name or password")
        params = conninfo_to_dict(self._dsn)
        params.update(user=name, password=password, passfile=os.devnull, connect_timeout="10")
        params.pop("service", None)
        try:
            with psycopg.connect(make_conninfo(**params), autocommit=True, row_factory=dict_row) as c:
                if not c.pgconn.used_password:
                    # trust or peer authentication: the server never checked the password
                    raise LoginRefused(
                        "the database did not check the password (pg_hba.conf trusts this login): "
                        "password login needs scram-sha-256"
                    )
                row = c.execute(queries.get("serve", "login_identity")).fetchone()
        except psycopg.Error:
            raise refused from None
        if not row or not row["reader"] or row["oid"] is None:
            raise refused
        oid = self.role_oid(name)
        if oid != int(row["oid"]):
            raise LoginRefused(
                f"{name} is a reader, but the page may not act as it yet: the owner runs `cbir-pg db migrate`"
            )
        return oid

    def audit(self, entry: dict[str, Any]) -> None:
        """Append one row to ``cbir.audit_log`` (as ``cbir_web``, the only role that may insert)."""
        from psycopg.types.json import Jsonb

        with self.conn(None) as c:
            c.execute(queries.get("serve", "audit"), {**entry, "filters": Jsonb(entry.get("filters") or {})})
            c.commit()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    # ------------------------------------------------------------------ catalogue
    def models(self, actor: Actor | None) -> list[dict[str, Any]]:
        """Models with an embedding table, and how many vectors each holds."""
        with self.conn(actor) as c:
            rows = c.execute(queries.get("serve", "models")).fetchall()
            out = []
            for r in rows:
                n = c.execute(
                    queries.get("serve", "model_count", table=identifiers.embedding_table(r["model"]))
                ).fetchone()["n"]
                out.append({"model": r["model"], "family": r["family"], "dim": r["dim"], "vectors": n})
        return [m for m in out if m["vectors"] > 0]

    def check_model(self, actor: Actor | None, model: str) -> str:
        if not isinstance(model, str) or not identifiers.KEY_PATTERN.fullmatch(model):
            raise ConfigError(f"invalid model name {model!r}")
        if model not in {m["model"] for m in self.models(actor)}:
            raise NotFoundError(f"unknown model {model!r}: no stored vectors for it")
        return model

    def filter_options(self, actor: Actor | None) -> dict[str, Any]:
        with self.conn(actor) as c:
            return dict(c.execute(queries.get("serve", "filter_options")).fetchone())

    def check_filters(self, actor: Actor | None, f: Filters) -> Filters:
        with self.conn(actor) as c:
            if (
                f.label is not None
                and not c.execute(queries.get("serve", "label_exists"), {"label": f.label}).fetchone()["ok"]
            ):
                raise ConfigError(f"unknown label {f.label!r}")
            if (
                f.dataset is not None
                and not c.execute(queries.get("serve", "dataset_exists"), {"dataset": f.dataset}).fetchone()[
                    "ok"
                ]
            ):
                raise ConfigError(f"unknown dataset {f.dataset!r}")
        return f

    # ------------------------------------------------------------------ one image
    def image(self, actor: Actor | None, image_id: int) -> dict[str, Any]:
        """An image's metadata (no uri, no patient key), its labels, duplicates and models with a vector."""
        with self.conn(actor) as c:
            row = c.execute(queries.get("serve", "image"), {"image_id": image_id}).fetchone()
            if row is None:
                raise NotFoundError(f"image {image_id} does not exist")
            info = {k: v for k, v in row.items() if k != "content_hash"}
            info["labels"] = c.execute(
                queries.get("serve", "image_labels"), {"image_id": image_id}
            ).fetchall()
            info["duplicates"] = [
                r["image_id"]
                for r in c.execute(queries.get("serve", "duplicates_of"), {"image_id": image_id}).fetchall()
            ]
        models = [m["model"] for m in self.models(actor)]
        with self.conn(actor) as c:
            info["models"] = [
                m
                for m in models
                if c.execute(
                    queries.get("serve", "has_vector", table=identifiers.embedding_table(m)),
                    {"image_id": image_id},
                ).fetchone()["ok"]
            ]
        if info["age"] is not None:
            info["age"] = float(info["age"])
        return info

    def image_file(self, actor: Actor | None, image_id: int) -> tuple[Path, str | None]:
        """Where the server reads an image's pixels (never sent to a client), and its content hash.

        The image is first looked up as ``actor`` (row-level security: an image they may not see does
        not exist for them); only then is its path read with ``cbir.image_file``, which only the server's
        own role may call, after ``reset role`` in the same transaction."""
        with self.conn(actor) as c:
            row = c.execute(queries.get("serve", "image_visible"), {"image_id": image_id}).fetchone()
            if row is None:
                raise NotFoundError(f"image {image_id} does not exist")
            c.execute("reset role")
            path = c.execute(queries.get("serve", "image_path"), {"image_id": image_id}).fetchone()["path"]
        if path is None:
            raise NotFoundError(f"image {image_id} does not exist")
        return Path(path), row["content_hash"]

    # ------------------------------------------------------------------ search
    def similar(
        self, actor: Actor | None, image_id: int, model: str, k: int, f: Filters
    ) -> list[dict[str, Any]]:
        """``cbir.similar_images`` for a stored image, then the filters it does not take."""
        params = {
            "image_id": image_id,
            "model": model,
            "split": f.split,
            "dataset": f.dataset,
            "modality": f.modality,
            "exclude_same_patient": f.exclude_same_patient,
        }
        with self.conn(actor) as c:
            if c.execute(queries.get("serve", "image"), {"image_id": image_id}).fetchone() is None:
                raise NotFoundError(f"image {image_id} does not exist")
            return self._ranked(c, "similar_images", params, k, f)

    def similar_to_vector(
        self, actor: Actor | None, vec, model: str, k: int, f: Filters, exclude_image_id: int | None = None
    ) -> list[dict[str, Any]]:
        params = {
            "vec": vec,
            "model": model,
            "split": f.split,
            "dataset": f.dataset,
            "modality": f.modality,
            "exclude_image_id": exclude_image_id,
        }
        with self.conn(actor) as c:
            return self._ranked(c, "similar_to_vector", params, k, f)

    @staticmethod
    def _ranked(c: psycopg.Connection, name: str, params: dict, k: int, f: Filters) -> list[dict[str, Any]]:
        """Top k after all filters. Filters the SQL function takes run inside its index scan; the others
        (label, sex, age) run on a ranked list fetched 4x deeper each round until k pass or none are left."""
        fetch = k if not f.post else min(max(8 * k, 100), MAX_CANDIDATES)
        while True:
            rows = c.execute(queries.get("serve", name), {**params, "k": fetch}).fetchall()
            kept = [r for r in rows if f.keeps(r)] if f.post else rows
            if len(kept) >= k or len(rows) < fetch or fetch >= MAX_CANDIDATES:
                break
            fetch = min(fetch * 4, MAX_CANDIDATES)
        out = []
        for rank, r in enumerate(kept[:k], start=1):
            out.append(
                {
                    "rank": rank,
                    "image_id": int(r["image_id"]),
                    "similarity": float(r["similarity"]),
                    "label": r["label"],
                    "dataset": r["dataset"],
                    "split": r["split"],
                    "modality": r["modality"],
                    "sex": r["sex"],
                    "age": float(r["age"]) if r["age"] is not None else None,
                }
            )
        return out

    def search_upload(
        self, actor: Actor | None, data: bytes, model: str, k: int, f: Filters
    ) -> tuple[dict[str, Any], list]:
        """Neighbours of uploaded bytes: decoded by the guarded decoder, looked up by pixel hash (a stored
        image uses its stored vector and is left out of its own results), else embedded on the fly with
        the model's stored encoder config. The bytes are never written anywhere."""
        from cbir_pg.images import decode_bytes, pixel_hash

        rgb = decode_bytes(data, "the upload")
        with self.conn(actor) as c:
            row = c.execute(
                queries.get("serve", "find_by_content_hash", table=identifiers.embedding_table(model)),
                {"hash": pixel_hash(rgb)},
            ).fetchone()
        if row is not None:
            found = int(row["image_id"])
            return {"image_id": found, "stored": True, "rgb": rgb}, self.similar(actor, found, model, k, f)
        if f.exclude_same_patient:
            raise ConfigError("excluding the query's patient needs a stored query image; an upload has none")
        from cbir_pg.search import _embed_file

        with self._embed_lock, self.conn(actor) as c:
            vec = _embed_file(c, model, rgb, Path("the upload"))
        return {"image_id": None, "stored": False, "rgb": rgb}, self.similar_to_vector(
            actor, vec, model, k, f
        )

    # ------------------------------------------------------------------ results
    def results(self, actor: Actor | None) -> dict[str, list[dict[str, Any]]]:
        """The cbir_report views a results page shows."""
        with self.conn(actor) as c:
            return {
                name: [dict(r) for r in c.execute(queries.get("serve", name)).fetchall()]
                for name in ("leaderboard", "class_precision", "ann_quality")
            }
