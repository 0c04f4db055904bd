"""What the pages and the API read, on ``cbir_web`` connections, each request's queries under ``set local role``
of its actor (:class:`~cbir_pg.app.serve.auth.Actor`), so row-level security shows a person only the
datasets granted to them; the same SQL API the CLI's search uses
(``cbir.similar_images`` / ``cbir.similar_to_vector``), the same decode path (:mod:`cbir_pg.images`) and
the same on-the-fly embedding (:func:`cbir_pg.search._embed_file`, checked against the stored config hash).

Rows are read by name and turned into plain dicts holding only what a page may show: never a patient key,
an image uri, a dataset root or a free-text tag (the role could not read them anyway).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.sql
from psycopg.rows import dict_row

from cbir_pg.cohort import Cohort
from cbir_pg.db import identifiers, queries
from cbir_pg.db.connect import connect, translate
from cbir_pg.errors import CbirError, ConfigError, DatabaseError, NotFoundError
from cbir_pg.rules import is_on

log = logging.getLogger("cbir_pg.serve")

if TYPE_CHECKING:
    from cbir_pg.app.serve.auth import Actor

#: the most neighbours a page or an API call returns
MAX_K = 100


def duplicate_note(image: dict[str, Any], dup: dict[str, Any]) -> dict[str, Any]:
    """A pixel duplicate of ``image`` and what differs: a duplicate with another label or in another split
    is what a reader must notice (the same pixels, two answers; or a test image also in train)."""
    differs = []
    if dup["label"] != image["label"]:
        differs.append(f"another label: {dup['label'] or 'none'}")
    if dup["split"] != image["split"]:
        differs.append(f"another split: {dup['split'] or 'none'}")
    if dup["dataset"] != image["dataset"]:
        differs.append(f"another dataset: {dup['dataset']}")
    return {
        "image_id": int(dup["image_id"]),
        "original": bool(dup["original"]),
        "label": dup["label"],
        "split": dup["split"],
        "differs": differs,
    }


def check_k(k: int) -> int:
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be between 1 and {MAX_K}, got {k!r}")
    return k


class PermissionDenied(DatabaseError):
    """The page's role lacks a grant (HTTP 503 with this message, logged): never "database unavailable"."""


def _sql_error(exc: psycopg.Error) -> CbirError:
    """The SQL API's own errors as the project's types: unknown thing → NotFound, bad value → Config,
    a missing grant → :class:`PermissionDenied` (logged: an administrator has something to fix)."""
    msg = (exc.diag.message_primary if exc.diag else None) or str(exc).splitlines()[0]
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        log.error("the page's role was refused: %s (run `cbir-pg db migrate` to restore its grants)", msg)
        return PermissionDenied(f"the page's database role was refused: {msg} (run `cbir-pg db migrate`)")
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
        # audit rows are committed without waiting for the disk unless CBIR_PG_AUDIT_SYNC=1 (docs/serve.md)
        self._audit_sync = is_on(os.environ.get("CBIR_PG_AUDIT_SYNC"))
        with self.conn(None) as c:  # fail at start-up, not on the first request
            c.execute("select 1")

    @contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection]:
        """A pooled connection for one piece of work: its psycopg errors as the project's
        (:func:`_sql_error`), then rolled back (which also resets a ``set local role``) and returned."""
        with self._slots:
            c = self._take()
            try:
                yield c
            except psycopg.Error as exc:
                raise _sql_error(exc) from None
            finally:
                self._give_back(c)

    @contextmanager
    def conn(self, actor: Actor | None) -> Iterator[psycopg.Connection]:
        """A connection for one request, acting as ``actor``: ``set local role`` to the actor's role
        (``None`` or the owner's session: the server's own ``cbir_web``). Read-only work, so it is rolled
        back (which also resets the role) and returned to the pool."""
        with self._pooled() as c:
            if actor is not None and actor.role is not None:
                c.execute(_set_role(actor.role))
            yield c

    def fetch(
        self, actor: Actor | None, query: str, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """One statement's rows as ``actor``, in one round trip: the role, the statement and the rollback
        go to the server together (psycopg's pipeline mode), where :meth:`conn` waits for each. A search is
        a few milliseconds, and each wait for the server costs a sizeable part of one."""
        with self._pooled() as c:
            with c.pipeline():
                if actor is not None and actor.role is not None:
                    c.execute(_set_role(actor.role))
                cur = c.execute(query, params)
                c.execute("rollback")  # the role goes with the transaction, as in conn()
            return cur.fetchall()

    def _give_back(self, c: psycopg.Connection) -> None:
        if c.closed or c.broken:
            return
        try:
            c.rollback()
            self._idle.put(c)
        except psycopg.Error:
            c.close()

    def _take(self) -> psycopg.Connection:
        """An idle connection the server has not closed (:func:`_alive`), else a new one: after a database
        restart the pool's connections are dead, and the next request reconnects instead of failing."""
        while True:
            try:
                c = self._idle.get_nowait()
            except queue.Empty:
                return connect(self._dsn, row_factory=dict_row)
            if _alive(c):
                return c
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

        with self._pooled() as c, c.pipeline():  # one round trip: the commit mode, the row and its commit
            if not self._audit_sync:
                c.execute(queries.get("serve", "audit_commit_mode"))
            c.execute(queries.get("serve", "audit"), {**entry, "filters": Jsonb(entry.get("filters") or {})})
            c.execute("commit")

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
                if not r["readable"]:
                    log.warning(
                        "model %s is left out: the page's role may not read %s (run `cbir-pg db migrate`)",
                        r["model"],
                        r["table_name"],
                    )
                    continue
                n = c.execute(
                    queries.get("serve", "model_count", table=identifiers.embedding_table(r["model"]))
                ).fetchone()["n"]
                out.append({"model": r["model"], "family": r["family"], "dim": r["dim"], "vectors": n})
        return [m for m in out if m["vectors"] > 0]

    def model_or_default(self, actor: Actor | None, requested: str | None) -> str:
        """The requested model, else the first with stored vectors (a 404 when there is none)."""
        model = (requested or "").strip() or None
        if model is None:
            models = self.models(actor)
            model = models[0]["model"] if models else None
        if model is None:
            raise NotFoundError("no model has stored vectors yet")
        return model

    def check_model(self, actor: Actor | None, model: str) -> str:
        _check_model_name(model)
        # on every search: the catalogue and one exists() (not models(): it counts every model's vectors)
        with self.conn(actor) as c:
            known = {r["model"] for r in c.execute(queries.get("serve", "models")).fetchall()}
            has = (
                model in known
                and c.execute(
                    queries.get("serve", "model_has_vectors", table=identifiers.embedding_table(model))
                ).fetchone()["ok"]
            )
        if not has:
            raise NotFoundError(f"unknown model {model!r}: no stored vectors for it")
        return model

    def filter_options(self, actor: Actor | None) -> dict[str, Any]:
        return dict(self.fetch(actor, queries.get("serve", "filter_options"))[0])

    def check_filters(self, actor: Actor | None, f: Cohort) -> Cohort:
        """Validate a cohort before anything is read or embedded (``cbir.resolve_cohort``, the one
        validation, as the actor: a dataset they may not see is unknown to them; ``patient`` same/other
        is checked with the query, which this does not know)."""
        self.fetch(actor, queries.get("serve", "check_cohort"), {"cohort": f.with_(patient=None).sql()})
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
            from cbir_pg.pacs.viewer import viewer_links

            info["viewer_url"] = viewer_links(c, [image_id]).get(image_id)
            dups = c.execute(queries.get("serve", "duplicates_of"), {"image_id": image_id}).fetchall()
            info["duplicates"] = [int(r["image_id"]) for r in dups if not r["original"]][:20]
            info["duplicate_details"] = [duplicate_note(info, r) for r in dups]
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
        if not row["local_pixels"]:
            from cbir_pg.search import PixelsNotAvailable

            raise PixelsNotAvailable(image_id)
        return Path(path), row["content_hash"]

    # ------------------------------------------------------------------ search
    def similar(
        self, actor: Actor | None, image_id: int, model: str, k: int, f: Cohort
    ) -> list[dict[str, Any]]:
        """``cbir.similar_images_v2`` for a stored image among the cohort: every filter runs inside the
        SQL function's index scan, which returns exactly k rows when k images of the cohort exist."""
        return self.search_by_id(actor, image_id, model, k, f)[1]

    def search_by_id(
        self, actor: Actor | None, image_id: int, model: str, k: int, f: Cohort
    ) -> tuple[str | None, list[dict[str, Any]]]:
        """The query image's label and its neighbours among the cohort, in one statement and one
        transaction (what ``GET /api/images/{id}/similar`` waits for): the model's check (as
        :meth:`check_model`), the image's visibility, the cohort's validation (``cbir.resolve_cohort``,
        with the query, so ``patient`` same/other too) and the search."""
        _check_model_name(model)
        params = {"image_id": image_id, "model": model, "k": k, "cohort": f.sql()}
        rows = self.fetch(actor, queries.get("serve", "search_by_id"), params)
        if not rows[0]["model_ok"]:
            raise NotFoundError(f"unknown model {model!r}: no stored vectors for it")
        if not rows[0]["image_ok"]:
            raise NotFoundError(f"image {image_id} does not exist")
        return rows[0]["query_label"], self._hits(actor, [r for r in rows if r["rank"] is not None])

    def similar_to_vector(
        self, actor: Actor | None, vec, model: str, k: int, f: Cohort, exclude_image_id: int | None = None
    ) -> list[dict[str, Any]]:
        params = {"vec": vec, "model": model, "k": k, "cohort": f.sql(), "query_image_id": exclude_image_id}
        return self._hits(actor, self.fetch(actor, queries.get("serve", "similar_to_vector"), params))

    def _hits(self, actor: Actor | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What a page shows of each neighbour, in rank order, with its "open in viewer" link
        (``CBIR_PG_VIEWER_URL``, docs/pacs.md; null for images from no PACS, and for all without one)."""
        from cbir_pg.pacs.viewer import viewer_links, viewer_template

        hits = [page_hit(r) for r in rows]
        links: dict[int, str] = {}
        if hits and viewer_template():
            with self.conn(actor) as c:
                links = viewer_links(c, [h["image_id"] for h in hits])
        for h in hits:
            h["viewer_url"] = links.get(h["image_id"])
        return hits

    def search_upload(
        self, actor: Actor | None, data: bytes, model: str, k: int, f: Cohort
    ) -> tuple[dict[str, Any], list]:
        """Neighbours of uploaded bytes: decoded by the guarded decoder, then :meth:`search_pixels`.
        The bytes are never written anywhere."""
        from cbir_pg.app.serve.uploads import Upload
        from cbir_pg.images import decode_bytes

        up = Upload(decode_bytes(data, "the upload"), b"")
        query, hits = self.search_pixels(actor, up, model, k, f)
        return {**query, "rgb": up.rgb}, hits

    def search_pixels(
        self, actor: Actor | None, up, model: str, k: int, f: Cohort
    ) -> tuple[dict[str, Any], list]:
        """Neighbours of an upload (:class:`~cbir_pg.app.serve.uploads.Upload`): looked up by pixel hash (a
        stored image the actor may see uses its stored vector and is left out of its own results), else
        embedded on the fly with the model's stored encoder config. The lookup (per actor: row-level
        security decides which stored images they see) and the vector are kept on ``up`` per model, so a
        re-run with other filters embeds nothing again."""
        from cbir_pg.images import pixel_hash

        seen_as = (model, actor.role if actor is not None else None)
        if seen_as not in up.stored_image_ids:
            with self.conn(actor) as c:
                row = c.execute(
                    queries.get("serve", "find_by_content_hash", table=identifiers.embedding_table(model)),
                    {"hash": pixel_hash(up.rgb)},
                ).fetchone()
            up.stored_image_ids[seen_as] = int(row["image_id"]) if row is not None else None
        found = up.stored_image_ids[seen_as]
        if found is not None:
            return {"image_id": found, "stored": True}, self.similar(actor, found, model, k, f)
        if f.relative_to_query:
            raise ConfigError(
                f"a patient filter relative to the query (patient: {f.patient}) needs a stored query image;"
                " an upload that is not stored has none"
            )
        if model not in up.vectors:
            from cbir_pg.search import _embed_file

            with self._embed_lock, self.conn(actor) as c:  # the encoder is built on first use, then kept
                up.vectors[model] = _embed_file(c, model, up.rgb, Path("the upload"))
        return {"image_id": None, "stored": False}, self.similar_to_vector(
            actor, up.vectors[model], model, k, f
        )

    def preload(self, model: str) -> None:
        """Build the encoder of ``model``'s stored vectors now (``serve --preload``), so the first upload
        does not wait for it; later uploads reuse it (:mod:`cbir_pg.encoders.loaded`)."""
        from cbir_pg.search import stored_encoder

        self.check_model(None, model)
        with self._embed_lock, self.conn(None) as c:
            stored_encoder(c, model)

    # ------------------------------------------------------------------ results
    def results(self, actor: Actor | None) -> dict[str, list[dict[str, Any]]]:
        """The cbir_report views a results page shows."""
        with self.conn(actor) as c:
            return {
                name: [dict(r) for r in c.execute(queries.get("serve", name)).fetchall()]
                for name in ("leaderboard", "class_precision", "ann_quality")
            }


def _set_role(role: str) -> psycopg.sql.Composable:
    return queries.get("serve", "set_role", role=psycopg.sql.Identifier(role))


def _alive(c: psycopg.Connection) -> bool:
    """Whether an idle pooled connection is still open, without a round trip: an idle connection's socket
    has nothing to read unless the server has closed it (a restart: its FATAL message and end of file).
    ``poll``, where there is one: ``select`` refuses descriptors above 1023, which a busy server reaches."""
    import select

    if c.closed or c.broken:
        return False
    try:
        if hasattr(select, "poll"):
            p = select.poll()
            p.register(c.fileno(), select.POLLIN)
            return not p.poll(0)
        return not select.select([c.fileno()], [], [], 0)[0]
    except (OSError, ValueError):
        return False


def _check_model_name(model: str) -> None:
    if not isinstance(model, str) or not identifiers.KEY_PATTERN.fullmatch(model):
        raise ConfigError(f"invalid model name {model!r}")


def page_hit(r: dict[str, Any]) -> dict[str, Any]:
    """One neighbour as the pages and the JSON API show it (no patient key, no path)."""
    return {
        "rank": int(r["rank"]),
        "image_id": int(r["image_id"]),
        "similarity": float(r["similarity"]),
        "label": r["label"],
        "dataset": r["dataset"],
        "split": r["split"],
        "modality": r["modality"],
        "sex": r["sex"],
        "age": float(r["age"]) if r["age"] is not None else None,
    }
