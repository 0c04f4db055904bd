"""``cbir-pg eval zeroshot``: text-to-image retrieval and zero-shot classification with an image-text
model's own text tower, no training.

One prompt per harmonised class, from a template over the class's fields (``{modality}``, ``{region}``,
``{finding}``, ``{key}``; the modality code is spelled out by :data:`MODALITY_WORDS`, e.g. ``XR`` ->
``x-ray``). The images are the labelled, non-excluded images of one split (default ``test``, and at
most one dataset) with a vector for the model.

* **Text-to-image retrieval**: each class prompt is a query; its top N images among those images come
  from ``cbir.knn`` (the engine of ``cbir.similar_to_vector``); P@N = relevant / min(N, class size), as
  in :mod:`eval.metrics`. Reported per class and as the mean over classes.
* **Zero-shot classification**: each image is given the class whose prompt vector is nearest (cosine,
  computed in SQL); accuracy over images (micro) and the mean of per-class accuracies (macro).

Stored as one ``zeroshot`` run: ``eval_metric`` rows ``P@N macro`` (mean over classes), ``accuracy``
micro/macro; ``eval_class_metric`` rows per class (``P`` at N, ``accuracy``); prompts in ``params``.
Read back through ``cbir_report.zeroshot`` and ``cbir_report.zeroshot_class``.
"""

from __future__ import annotations

import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from cbir_pg.db import queries
from cbir_pg.db.database import Database, dict_cursor
from cbir_pg.errors import ConfigError, NotFoundError
from cbir_pg.eval import metrics, runs
from cbir_pg.eval.topn import MODES, encoder_table
from cbir_pg.rules import check_split

DEFAULT_TEMPLATE = "a {modality} image of {finding} in the {region}"
#: how a modality code reads in a prompt
MODALITY_WORDS = {
    "XR": "x-ray",
    "US": "ultrasound",
    "CT": "CT",
    "MR": "MRI",
    "PET": "PET",
    "NM": "nuclear medicine",
}
FIELDS = ("modality", "region", "finding", "key")


def check_template(template: str) -> str:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigError(f"bad --template {template!r}: {exc}") from None
    unknown = sorted(names - set(FIELDS))
    if unknown or not template.strip():
        raise ConfigError(
            f"bad --template {template!r}: fields {', '.join(unknown) or '(none)'}; use {', '.join('{' + f + '}' for f in FIELDS)}"
        )
    return template


def prompt_for(template: str, key: str, modality: str, region: str, finding: str) -> str:
    """The text query of one class."""
    return template.format(
        modality=MODALITY_WORDS.get(modality, modality),
        region=region.replace("_", " "),
        finding=finding.replace("_", " "),
        key=key,
    )


@dataclass
class ZeroShotResult:
    model: str
    run_id: int
    mode: str
    ns: tuple[int, ...]
    classes: list[str]
    prompts: list[str]
    class_sizes: list[int]
    class_precision: np.ndarray  # (classes, len(ns)), NaN where a class has no image
    mean_precision: np.ndarray  # (len(ns),)
    class_accuracy: np.ndarray  # (classes,)
    accuracy: float
    balanced_accuracy: float
    n_images: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Searched:
    """The classes (id, key, image count, prompt), each prompt's ranked images and each image's guess."""

    label_ids: list[int]
    keys: list[str]
    sizes: list[int]
    prompts: list[str]
    rows: list[dict]  # zeroshot_retrieval: ord, rank, relevant
    pred: list[dict]  # zeroshot_classify: label_id, predicted


def _search(db: Database, model: str, template: str, n: int, scope: dict[str, Any], weights) -> _Searched:
    """Embed one prompt per class and run both SQL queries (retrieval by prompt, nearest prompt per image)."""
    from cbir_pg.encoders.text import create_text_encoder, embed_texts
    from cbir_pg.search import check_stored_config

    split, ds = scope["split"], scope["datasets"]
    filters = {"splits": [split], "datasets": list(ds) if ds else None}
    with db.connection() as conn:
        cur = dict_cursor(conn)
        table, _ = encoder_table(conn, model)
        check_stored_config(conn, model, weights)
        classes = cur.execute(queries.get("eval", "zeroshot_classes", table=table), filters).fetchall()
        if not classes:
            raise NotFoundError(
                f"no labelled {split} images with a {model} vector" + (f" in {ds[0]}" if ds else "")
            )
        label_ids = [int(c["id"]) for c in classes]
        prompts = [prompt_for(template, c["key"], c["modality"], c["region"], c["finding"]) for c in classes]
        vecs = list(embed_texts(create_text_encoder(model, weights=weights), prompts))
        by_prompt = {"label_ids": label_ids, "vecs": vecs, "model": model, "n": n, "split": split}
        rows = cur.execute(
            queries.get("eval", "zeroshot_retrieval"),
            dict(by_prompt, dataset=ds[0] if ds else None, method=scope["search"]),
        ).fetchall()
        pred = cur.execute(
            queries.get("eval", "zeroshot_classify", table=table),
            {**filters, "label_ids": label_ids, "vecs": vecs},
        ).fetchall()
        conn.rollback()
    keys, sizes = [c["key"] for c in classes], [int(c["n_images"]) for c in classes]
    return _Searched(label_ids, keys, sizes, prompts, rows, pred)


@dataclass
class _Scored:
    class_precision: np.ndarray
    mean_precision: np.ndarray
    class_accuracy: np.ndarray
    accuracy: float
    balanced_accuracy: float


def _score(s: _Searched, ns: tuple[int, ...]) -> _Scored:
    """P@N per class prompt (and its mean over classes); accuracy over images and per class."""
    relevant = np.zeros((len(s.label_ids), max(ns)), dtype=bool)
    for r in s.rows:
        relevant[r["ord"] - 1, r["rank"] - 1] = r["relevant"]
    prec = metrics.precision_at_n(relevant, np.array(s.sizes, dtype=np.int64), ns)
    truth = np.array([int(r["label_id"]) for r in s.pred], dtype=np.int64)
    guess = np.array([int(r["predicted"]) for r in s.pred], dtype=np.int64)
    correct = truth == guess
    class_acc = np.array(
        [correct[truth == lab].mean() if (truth == lab).any() else np.nan for lab in s.label_ids]
    )
    return _Scored(
        prec,
        np.nanmean(prec, axis=0),
        class_acc,
        float(correct.mean()) if len(correct) else float("nan"),
        float(np.nanmean(class_acc)) if len(class_acc) else float("nan"),
    )


def _store(
    db: Database, model: str, mode: str, s: _Searched, sc: _Scored, params: dict, timing: tuple
) -> int:
    """The ``zeroshot`` run: P@N macro and accuracy micro/macro, per class P@N and accuracy."""
    seconds, started = timing
    ns = params["ns"]
    run_metrics = {
        "accuracy": sc.accuracy,
        "balanced_accuracy": sc.balanced_accuracy,
        **{f"P@{cut}": {"mean": sc.mean_precision[j]} for j, cut in enumerate(ns)},
    }
    with db.connection() as conn:
        run_id = runs.insert_run(
            conn, kind="zeroshot", model=model, mode=mode, params=params, index_params={}
        )
        mrows = [runs.Metric("P", cut, "macro", sc.mean_precision[j]) for j, cut in enumerate(ns)]
        mrows += [
            runs.Metric("accuracy", 0, "micro", sc.accuracy),
            runs.Metric("accuracy", 0, "macro", sc.balanced_accuracy),
        ]
        runs.write_metrics(conn, run_id, mrows)
        crows = []
        for i, lab in enumerate(s.label_ids):
            crows += [
                runs.ClassMetric(lab, "P", cut, 1, s.sizes[i], sc.class_precision[i, j])
                for j, cut in enumerate(ns)
            ]
            crows.append(runs.ClassMetric(lab, "accuracy", 0, s.sizes[i], s.sizes[i], sc.class_accuracy[i]))
        runs.write_class_metrics(conn, run_id, crows)
        runs.finish_run(
            conn,
            run_id,
            n_queries=len(s.label_ids),
            n_index=len(s.pred),
            metrics=run_metrics,
            total_s=seconds,
            started_at=started,
        )
    return run_id


def _params(
    template: str, s: _Searched, ns: tuple[int, ...], scope: dict[str, Any], weights
) -> dict[str, Any]:
    ds = scope["datasets"]
    return {
        "template": template,
        "prompts": dict(zip(s.keys, s.prompts, strict=True)),
        "ns": list(ns),
        "query_splits": [scope["split"]],
        "index_splits": [scope["split"]],
        "datasets": list(ds) if ds else None,
        "weights": str(weights) if weights else None,
        "search": scope["search"],
        "retrieval": "one text query per class against the split's images, P@N = relevant / min(N, class size)",
        "classification": "nearest class prompt by cosine",
    }


def evaluate_zeroshot(
    db: Database,
    model: str,
    *,
    template: str = DEFAULT_TEMPLATE,
    ns: Sequence[int] = metrics.DEFAULT_NS,
    split: str = "test",
    datasets: Sequence[str] | None = None,
    mode: str = "exact",
    weights: str | None = None,
) -> ZeroShotResult:
    """Run and store the zero-shot evaluation of ``model`` (see the module docstring).

    Steps: check the options, embed the prompts and search in SQL, score, store the run."""
    from cbir_pg.encoders.text import check_text_tower

    ns = metrics.check_ns(ns)
    check_template(template)
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: use 'ann' or 'exact'")
    check_split(split)
    ds = tuple(dict.fromkeys(datasets)) if datasets else None
    if ds is not None and len(ds) > 1:
        raise ConfigError(f"zero-shot evaluation searches one dataset or all of them, got {', '.join(ds)}")
    check_text_tower(model)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    scope = {"split": split, "datasets": ds, "search": "exact" if mode == "exact" else "auto"}
    s = _search(db, model, template, max(ns), scope, weights)
    sc = _score(s, ns)
    seconds = time.perf_counter() - t0
    run_id = _store(db, model, mode, s, sc, _params(template, s, ns, scope, weights), (seconds, started))
    return ZeroShotResult(
        model=model,
        run_id=run_id,
        mode=mode,
        ns=ns,
        classes=s.keys,
        prompts=s.prompts,
        class_sizes=s.sizes,
        class_precision=sc.class_precision,
        mean_precision=sc.mean_precision,
        class_accuracy=sc.class_accuracy,
        accuracy=sc.accuracy,
        balanced_accuracy=sc.balanced_accuracy,
        n_images=len(s.pred),
        seconds=seconds,
    )
