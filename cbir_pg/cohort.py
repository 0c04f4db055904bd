"""A cohort: "similar cases among these images", one value from every interface down to SQL.

The CLI (``cbir-pg search``), the façade (:meth:`cbir_pg.app.api.Client.search`), the page and the API
(``cbir-pg serve``) and evaluation build a :class:`Cohort` from their own inputs and hand it to the SQL
API as one jsonb object (:meth:`Cohort.as_json`), which ``cbir.resolve_cohort``
(``sql/schema/20_search.sql``) validates once and resolves (names to ids) for the search functions'
native, exact-k filtering. The value rules (split names, sexes, the age range, which dataset, label or
saved cohort exists) live there, in one place; this class only types the inputs (numbers are numbers,
ids are integers) so that a bad value is one clear message whichever interface it came from.

Keys (all optional, combined with AND):

* ``split``, ``dataset``, ``modality``: the image's split, dataset key and modality;
* ``label``: the image's (primary) label key, e.g. ``XR/chest/pneumonia``;
* ``sex`` (``F`` | ``M`` | ``O``), ``age_min``, ``age_max`` (inclusive): the patient's;
* ``patient``: ``same`` (the query image's patient only) or ``other`` (everyone else), relative to a
  stored query image; ``patient_id`` / ``exclude_patient_id``: a ``cbir.patient`` id;
* ``image_ids``: only these images; ``cohort``: a saved cohort's name (``cbir.cohort``), whose filter
  and ids are added.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from cbir_pg.errors import ConfigError
from cbir_pg.rules import TRUE_WORDS

#: ``patient`` values: the query's patient only, or every other patient
PATIENT_CHOICES = ("same", "other")
_TEXT = ("split", "dataset", "modality", "label", "sex", "patient", "cohort")
_NUMBER = ("age_min", "age_max")
_ID = ("patient_id", "exclude_patient_id")
_TRUE = TRUE_WORDS
_FALSE = ("", "0", "false", "off", "no")


@dataclass(frozen=True)
class Cohort:
    """A search's cohort; ``None`` means "any". Build it from plain values, or with
    :meth:`from_params` from the strings of a form, a query string or the CLI."""

    split: str | None = None
    dataset: str | None = None
    modality: str | None = None
    label: str | None = None
    sex: str | None = None
    age_min: float | None = None
    age_max: float | None = None
    patient: str | None = None
    patient_id: int | None = None
    exclude_patient_id: int | None = None
    image_ids: tuple[int, ...] | None = None
    cohort: str | None = None

    def __post_init__(self) -> None:
        for name in _TEXT:
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ConfigError(f"{name} must be text, got {v!r}")
        for name in _NUMBER:
            v = getattr(self, name)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
                    raise ConfigError(f"{name.replace('_', ' ')} must be a number, got {v!r}")
                object.__setattr__(self, name, float(v))
        for name in _ID:
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ConfigError(f"{name.replace('_', ' ')} must be an integer id, got {v!r}")
        if self.image_ids is not None:
            ids = tuple(self.image_ids)
            if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
                raise ConfigError("image ids must be integers")
            object.__setattr__(self, "image_ids", ids)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Cohort:
        """From strings (a query string, a form, CLI options); empty fields mean "any".

        ``exclude_same_patient`` (true/false, the released parameter) and ``same_patient`` set
        ``patient`` to ``other`` / ``same``; ``image_ids`` is a comma-separated list."""

        def text(name: str) -> str | None:
            v = params.get(name)
            if v is None:
                return None
            v = str(v).strip()
            return v or None

        def number(name: str, kind=float):
            v = text(name)
            if v is None:
                return None
            try:
                return kind(v)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ConfigError(f"{name.replace('_', ' ')} must be {what}, got {v[:40]!r}") from None

        def flag(name: str) -> bool:
            v = (text(name) or "").lower()
            if v not in _TRUE + _FALSE:
                raise ConfigError(f"{name} must be true or false, got {v[:20]!r}")
            return v in _TRUE

        patient = text("patient")
        for name, value in (("exclude_same_patient", "other"), ("same_patient", "same")):
            if flag(name):
                if patient not in (None, value):
                    raise ConfigError("choose one of same patient only and exclude the same patient")
                patient = value
        ids = text("image_ids")
        return cls(
            split=text("split"),
            dataset=text("dataset"),
            modality=text("modality"),
            label=text("label"),
            sex=text("sex"),
            age_min=number("age_min"),
            age_max=number("age_max"),
            patient=patient,
            patient_id=number("patient_id", int),
            exclude_patient_id=number("exclude_patient_id", int),
            image_ids=None if ids is None else _parse_ids(ids.split(",")),
            cohort=text("cohort"),
        )

    def with_(self, **changes: Any) -> Cohort:
        return replace(self, **changes)

    # ------------------------------------------------------------------ reading
    @property
    def exclude_same_patient(self) -> bool:
        return self.patient == "other"

    @property
    def same_patient(self) -> bool:
        return self.patient == "same"

    @property
    def relative_to_query(self) -> bool:
        """Whether it needs a stored query image (``patient`` is relative to the query's patient)."""
        return self.patient is not None

    def is_empty(self) -> bool:
        return not self.as_json()

    def as_json(self) -> dict[str, Any]:
        """The jsonb ``cbir.similar_images_v2`` / ``cbir.similar_to_vector_v2`` take (``None`` left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if f.name == "image_ids" else v
        return out

    def sql(self):
        """:meth:`as_json` as a psycopg ``Jsonb`` parameter."""
        from psycopg.types.json import Jsonb

        return Jsonb(self.as_json())

    def as_params(self) -> dict[str, Any]:
        """Form / query-string fields that :meth:`from_params` reads back to an equal cohort."""
        out = {k: v for k, v in self.as_json().items() if k not in ("image_ids", "patient")}
        if self.image_ids is not None:
            out["image_ids"] = ",".join(str(i) for i in self.image_ids)
        if self.patient == "other":
            out["exclude_same_patient"] = True
        elif self.patient == "same":
            out["same_patient"] = True
        return out


def _parse_ids(items: Iterable[str]) -> tuple[int, ...]:
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            out.append(int(item))
        except ValueError:
            raise ConfigError(f"image ids must be integers, got {item[:20]!r}") from None
    return tuple(out)


def as_cohort(base: Cohort | str | None = None, /, **filters: Any) -> Cohort:
    """``base`` (a :class:`Cohort`, or a saved cohort's name) with keyword filters added (the façade's
    and the library's keyword arguments): any :class:`Cohort` field, plus ``exclude_same_patient`` /
    ``same_patient`` (booleans). ``None`` values are left out; a key set in both is an error."""
    if isinstance(base, str):
        base = Cohort(cohort=base)
    base = base or Cohort()
    patient = None
    if filters.pop("exclude_same_patient", False):
        patient = "other"
    if filters.pop("same_patient", False):
        if patient is not None:
            raise ConfigError("choose one of same patient only and exclude the same patient")
        patient = "same"
    if patient is not None:
        filters["patient"] = patient
    names = {f.name for f in fields(Cohort)}
    unknown = sorted(set(filters) - names)
    if unknown:
        raise ConfigError(f"unknown filter {unknown[0]!r}; use {', '.join(sorted(names))}")
    given = {k: v for k, v in filters.items() if v is not None}
    both = [k for k in given if getattr(base, k) is not None]
    if both:
        raise ConfigError(f"the cohort already sets {both[0]}")
    return replace(base, **given) if given else base
