"""Page logic without a database (issue 26): kept uploads, figure captions and order, side-by-side ranks,
duplicate notes."""

from __future__ import annotations

import numpy as np
import pytest

from cbir_pg.app.serve.figures import describe, report_figures
from cbir_pg.app.serve.store import duplicate_note
from cbir_pg.app.serve.uploads import Upload, UploadStore
from cbir_pg.app.serve.web import compare_columns, search_href
from cbir_pg.errors import ConfigError, NotFoundError


def _upload() -> Upload:
    return Upload(np.zeros((4, 4, 3), np.uint8), b"png")


def test_kept_uploads_come_back_by_token_and_are_forgotten_oldest_first() -> None:
    store = UploadStore(max_uploads=2)
    a, b = store.put(_upload()), store.put(_upload())
    assert store.get(a).thumb_png == b"png"  # a is now the most recently used
    c = store.put(_upload())
    assert len(store) == 2 and store.get(a) and store.get(c)
    with pytest.raises(NotFoundError, match="upload it again"):
        store.get(b)
    with pytest.raises(ConfigError, match="invalid upload reference"):
        store.get("../../etc/passwd")
    assert a != c and len(a) >= 32


def test_kept_uploads_expire(monkeypatch) -> None:
    import cbir_pg.app.serve.uploads as uploads

    now = [1000.0]
    monkeypatch.setattr(uploads.time, "monotonic", lambda: now[0])
    store = UploadStore(ttl_s=60)
    token = store.put(_upload())
    now[0] += 59
    assert store.get(token)
    now[0] += 61
    with pytest.raises(NotFoundError):
        store.get(token)


def test_search_href_keeps_the_upload_and_the_filters() -> None:
    from cbir_pg.cohort import Cohort as Filters

    href = search_href(None, "efficientnet_lite0", 20, Filters(split="test"), upload="tok" * 8, compare=1)
    assert href == "/?upload=" + "tok" * 8 + "&model=efficientnet_lite0&k=20&split=test&compare=1"
    assert search_href(7, "m") == "/?image_id=7&model=m"


def test_figures_are_captioned_and_in_the_reports_order(tmp_path) -> None:
    for name in (
        "fig5_tsne_b.png",
        "fig3b_ablation.png",
        "fig3a_class_p1_vs_size_a.png",
        "fig2_retrievals_a.png",
        "fig2_retrievals_b.png",
        "extra_plot.png",
    ):
        (tmp_path / name).write_bytes(b"")
    got = [f.name for f in report_figures(tmp_path)]
    assert got == [
        "fig2_retrievals_a.png",
        "fig2_retrievals_b.png",
        "fig3a_class_p1_vs_size_a.png",
        "fig3b_ablation.png",
        "fig5_tsne_b.png",
        "extra_plot.png",
    ]
    assert describe("fig5_tsne_efficientnet_lite0.png").caption.startswith(
        "Fig. 5 · efficientnet_lite0: t-SNE"
    )
    assert describe("extra_plot.png").caption == "Extra plot"
    assert report_figures(None) == [] and report_figures(tmp_path / "missing") == []


def test_side_by_side_ranks() -> None:
    cols = compare_columns(
        [
            {"model": "a", "hits": [{"image_id": 1, "rank": 1}, {"image_id": 2, "rank": 2}]},
            {"model": "b", "hits": [{"image_id": 2, "rank": 1}, {"image_id": 3, "rank": 2}]},
        ]
    )
    assert [h["also"] for h in cols[0]["hits"]] == [[], [{"model": "b", "rank": 1}]]
    assert [h["also"] for h in cols[1]["hits"]] == [[{"model": "a", "rank": 2}], []]
    single = compare_columns([{"model": "a", "hits": [{"image_id": 1, "rank": 1}]}])
    assert "also" not in single[0]["hits"][0]  # one model: nothing to compare


def test_duplicate_notes_say_what_differs() -> None:
    image = {"label": "US/breast/benign_or_normal", "split": "test", "dataset": "breastmnist"}
    same = {
        "image_id": 5,
        "original": False,
        "label": image["label"],
        "split": "test",
        "dataset": "breastmnist",
    }
    other = {
        "image_id": 6,
        "original": True,
        "label": "US/breast/malignant",
        "split": "train",
        "dataset": "breastmnist",
    }
    assert duplicate_note(image, same)["differs"] == []
    assert duplicate_note(image, other)["differs"] == [
        "another label: US/breast/malignant",
        "another split: train",
    ]
