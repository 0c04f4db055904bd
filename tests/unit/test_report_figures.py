"""Report figure helpers: several labelled ticks on every log axis (Fig. 3A/3B), one meaning per colour
across the Fig. 5 panels, and the Fig. 2 frame-colour legend."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cbir_pg import search
from cbir_pg.eval.report import FRAME_LEGEND, facet_colours, frame_legend, log_ticks


def test_log_ticks_label_several_points_even_in_a_narrow_range() -> None:
    assert log_ticks(8, 1200) == [10, 20, 50, 100, 200, 500, 1000]
    for lo, hi in ((100, 180), (300, 900), (1.5, 4.0), (40, 60)):
        ticks = log_ticks(lo, hi)
        assert len(ticks) >= 3 and all(lo * 0.9 <= t <= hi * 1.1 for t in ticks), (lo, hi, ticks)
        assert ticks == sorted(set(ticks))


def test_fig3a_axis_has_several_labelled_ticks(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from cbir_pg.eval.report import _log_x

    fig, ax = plt.subplots()
    ax.scatter([120, 150, 170], [0.5, 0.6, 0.7])
    _log_x(ax, [120, 150, 170])
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    plt.close(fig)
    assert len(labels) >= 3, labels


def test_fig5_colours_mean_one_thing_across_panels() -> None:
    facets = {
        "modality": ["US", "XR", "US"],
        "region": ["breast", "chest", "breast"],
        "class": [
            "US/breast/malignant",
            "US/breast/benign_or_normal",
            "XR/chest/normal",
            "XR/chest/pneumonia",
        ],
    }
    colours = facet_colours(facets)
    assert len(colours) == 2 + 2 + 4
    assert len(set(colours.values())) == len(colours)  # no colour reused for another meaning
    many = {"class": [f"c{i}" for i in range(30)], "region": ["a", "b"]}
    assert len(set(facet_colours(many).values())) == 32


def test_fig2_legend_strip_shows_every_frame_colour() -> None:
    grid = Image.new("RGB", (600, 100), (255, 255, 255))
    out = frame_legend(grid)
    assert out.size == (600, 122)
    strip = np.asarray(out)[100:]
    present = {tuple(px) for row in strip for px in row}
    for _text, name in FRAME_LEGEND:
        assert getattr(search, name) in present


# issue 26, items 12 and 18
def test_index_html_shows_human_column_names() -> None:
    from cbir_pg.eval.report import human_column

    assert [
        human_column(c) for c in ("p1_micro", "p10_macro", "n_index", "n_queries", "recall10", "run_id")
    ] == [
        "P@1 micro",
        "P@10 macro",
        "index images",
        "queries",
        "recall@10",
        "run",
    ]


def test_fig5_never_uses_the_grey_of_no_label() -> None:
    import matplotlib

    greys = {matplotlib.colormaps["tab20"](i) for i in (14, 15)}
    for n in (2, 10, 18):
        colours = facet_colours({"class": [f"c{i}" for i in range(n)]})
        assert not greys & set(colours.values()), n
        assert len(set(colours.values())) == n


def test_fig2_legend_explains_cos() -> None:
    from cbir_pg.eval.report import COS_NOTE

    grid = Image.new("RGB", (700, 100), (255, 255, 255))
    plain, noted = frame_legend(grid), frame_legend(grid, COS_NOTE)
    assert noted.height == plain.height + 16
    line = np.asarray(noted)[plain.height : noted.height]
    assert (line < 128).any()  # the note's text is drawn
    assert "cosine similarity" in COS_NOTE


def test_models_compared_in_one_figure(tmp_path) -> None:
    from cbir_pg.eval.report_compare import comparable_rows, fig_compare_models

    cols = ["model", "mode", "scope", "profile", "p1_micro", "p1_macro", "p10_micro", "p10_macro"]
    rows = [
        ["efficientnet_lite0", "ann", "b,p:train->test", "default", 0.78, 0.73, 0.72, 0.62],
        ["efficientnet_lite2", "ann", "b,p:train->test", "default", 0.80, 0.75, 0.74, 0.64],
        [
            "mean(efficientnet_lite0,efficientnet_lite2)",
            "ann",
            "b,p:train->test",
            "default",
            0.81,
            0.76,
            0.75,
            0.65,
        ],
        ["efficientnet_lite0", "exact", "b,p:train->test", "default", 0.78, 0.73, 0.72, 0.62],
        ["efficientnet_lite0", "ann", "b:train->test", "default", 0.9, 0.9, 0.9, 0.9],
    ]
    scope, mode, chosen = comparable_rows(cols, rows)
    assert (scope, mode) == ("b,p:train->test", "ann")
    assert [r["model"] for r in chosen] == [
        "mean(efficientnet_lite0,efficientnet_lite2)",
        "efficientnet_lite2",
        "efficientnet_lite0",
    ]
    path = fig_compare_models(cols, rows, tmp_path / "fig1_models.png")
    assert path is not None and Image.open(path).size[0] > 600
    assert fig_compare_models(cols, rows[:1], tmp_path / "one.png") is None
