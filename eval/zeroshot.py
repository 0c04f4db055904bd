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
    """Run and store the zero-shot evaluation of ``model`` (see the module docstring)."""
    from cbir_pg.encoders.text import check_text_tower, create_text_encoder, embed_texts
    from cbir_pg.search import check_stored_config

    ns = metrics.check_ns(ns)
    check_template(template)
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: use 'ann' or 'exact'")
    check_split(split)
    ds = tuple(dict.fromkeys(datasets)) if datasets else None
    if ds is not None and len(ds) > 1:
        raise ConfigError(f"zero-shot evaluation searches one dataset or all of them, got {', '.join(ds)}")
    check_text_tower(model)
    n = max(ns)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
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
        keys = [c["key"] for c in classes]
        sizes = [int(c["n_images"]) for c in classes]
        prompts = [prompt_for(template, c["key"], c["modality"], c["region"], c["finding"]) for c in classes]
        vecs = embed_texts(create_text_encoder(model, weights=weights), prompts)
        vec_param = [v for v in vecs]
        rows = cur.execute(
            queries.get("eval", "zeroshot_retrieval"),
            {
                "label_ids": label_ids,
                "vecs": vec_param,
                "model": model,
                "n": n,
                "split": split,
                "dataset": ds[0] if ds else None,
                "method": "exact" if mode == "exact" else "auto",
            },
        ).fetchall()
        pred = cur.execute(
            queries.get("eval", "zeroshot_classify", table=table),
            {**filters, "label_ids": label_ids, "vecs": vec_param},
        ).fetchall()
        conn.rollback()

    c = len(classes)
    relevant = np.zeros((c, n), dtype=bool)
    for r in rows:
        relevant[r["ord"] - 1, r["rank"] - 1] = r["relevant"]
    prec = metrics.precision_at_n(relevant, np.array(sizes, dtype=np.int64), ns)
    mean_prec = np.nanmean(prec, axis=0)
    truth = np.array([int(r["label_id"]) for r in pred], dtype=np.int64)
    guess = np.array([int(r["predicted"]) for r in pred], dtype=np.int64)
    correct = truth == guess
    class_acc = np.array(
        [correct[truth == lab].mean() if (truth == lab).any() else np.nan for lab in label_ids]
    )
    accuracy = float(correct.mean()) if len(correct) else float("nan")
    balanced = float(np.nanmean(class_acc)) if len(class_acc) else float("nan")
    seconds = time.perf_counter() - t0

    params: dict[str, Any] = {
        "template": template,
        "prompts": dict(zip(keys, prompts, strict=True)),
        "ns": list(ns),
        "query_splits": [split],
        "index_splits": [split],
        "datasets": list(ds) if ds else None,
        "weights": str(weights) if weights else None,
        "search": "exact" if mode == "exact" else "auto",
        "retrieval": "one text query per class against the split's images, P@N = relevant / min(N, class size)",
        "classification": "nearest class prompt by cosine",
    }
    run_metrics = {
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        **{f"P@{cut}": {"mean": mean_prec[j]} for j, cut in enumerate(ns)},
    }
    with db.connection() as conn:
        run_id = runs.insert_run(
            conn, kind="zeroshot", model=model, mode=mode, params=params, index_params={}
        )
        mrows = [runs.Metric("P", cut, "macro", mean_prec[j]) for j, cut in enumerate(ns)]
        mrows += [
            runs.Metric("accuracy", 0, "micro", accuracy),
            runs.Metric("accuracy", 0, "macro", balanced),
        ]
        runs.write_metrics(conn, run_id, mrows)
        crows = []
        for i, lab in enumerate(label_ids):
            for j, cut in enumerate(ns):
                crows.append(runs.ClassMetric(lab, "P", cut, 1, sizes[i], prec[i, j]))
            crows.append(runs.ClassMetric(lab, "accuracy", 0, sizes[i], sizes[i], class_acc[i]))
        runs.write_class_metrics(conn, run_id, crows)
        runs.finish_run(
            conn,
            run_id,
            n_queries=c,
            n_index=len(pred),
            metrics=run_metrics,
            total_s=seconds,
            started_at=started,
        )
    return ZeroShotResult(
        model=model,
        run_id=run_id,
        mode=mode,
        ns=ns,
        classes=keys,
        prompts=prompts,
        class_sizes=sizes,
        class_precision=prec,
        mean_precision=mean_prec,
        class_accuracy=class_acc,
        accuracy=accuracy,
        balanced_accuracy=balanced,
        n_images=len(pred),
        seconds=seconds,
    )
