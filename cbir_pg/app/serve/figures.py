"""The report figures ``/results`` shows: what each file of ``cbir-pg report`` is, in reading order.

A figure's caption says what it shows and for which model, from its file name (the names
:mod:`eval.report` writes); a file of another name keeps a caption made from its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: (order, file-name pattern, caption template): the report's own order, the comparison, Fig. 2, 3A, 3B, 5
KINDS: tuple[tuple[int, re.Pattern[str], str], ...] = (
    (
        1,
        re.compile(r"fig1_models\.png"),
        "Models compared: P@1 and P@10, micro and macro, of every model (and fused row) of one scope",
    ),
    (
        2,
        re.compile(r"fig2_retrievals_(?P<model>[a-z0-9_]+)\.png"),
        "Fig. 2 · {model}: sampled test queries (orange frame) and their 5 nearest train images; green = same "
        "label, red = another label",
    ),
    (
        3,
        re.compile(r"fig3a_class_p1_vs_size_(?P<model>[a-z0-9_]+)\.png"),
        "Fig. 3A · {model}: per-class P@1 against the number of index images of the class (anatomical and "
        "pathological classes in two colours)",
    ),
    (
        4,
        re.compile(r"fig3b_ablation\.png"),
        "Fig. 3B: P@1 against index images per class, one curve per model",
    ),
    (
        5,
        re.compile(r"fig5_tsne_(?P<model>[a-z0-9_]+)\.png"),
        "Fig. 5 · {model}: t-SNE of a sample of embeddings, coloured by modality, body region and class",
    ),
)


@dataclass(frozen=True)
class Figure:
    name: str
    caption: str
    order: tuple[int, str]


def describe(name: str) -> Figure:
    """The caption and sort key of one figure file."""
    for order, pattern, caption in KINDS:
        m = pattern.fullmatch(name)
        if m:
            model = m.groupdict().get("model") or ""
            return Figure(name, caption.format(model=model), (order, model))
    stem = Path(name).stem.replace("_", " ").replace("-", " ")
    return Figure(name, f"{stem[:1].upper()}{stem[1:]}", (9, name))


def report_figures(folder: Path | None) -> list[Figure]:
    """The PNG figures of a report folder, captioned, in the report's order (none without a folder)."""
    if folder is None or not folder.is_dir():
        return []
    return sorted((describe(p.name) for p in folder.glob("*.png")), key=lambda f: f.order)
