"""Progress when stdout is not a terminal (``make demo | tee demo.log``): plain lines with count, rate, ETA."""

from __future__ import annotations

import subprocess
import sys

from cbir_pg.progress import plain_line, progress_bar


def test_plain_line_says_count_rate_and_eta() -> None:
    line = plain_line("ingest efficientnet_lite0", 1280, 5810, 10.0, "img")
    assert line == "ingest efficientnet_lite0: 1,280/5,810 img (22%) · 128 img/s · ETA 35s"
    assert plain_line("x", 5810, 5810, 130.0, "img").endswith(
        "5,810/5,810 img (100%) · 45 img/s · done in 2m10s"
    )
    assert plain_line("eval", 3, None, 1.0, "queries") == "eval: 3 queries · 3 queries/s"
    assert plain_line("x", 0, 10, 0.0, "img") == "x: 0/10 img (0%) · - img/s"


def test_a_bar_on_a_pipe_prints_plain_lines(capsys, monkeypatch) -> None:
    monkeypatch.setenv("CBIR_PG_PROGRESS_EVERY", "0")  # a line on every update, so the count is exact
    with progress_bar(10, "ingest tiny_cnn") as bar:
        for _ in range(3):
            bar.advance(2)
        bar.set(10)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[1].split(" img")[0] for line in lines] == ["2/10", "4/10", "6/10", "10/10"]
    assert "ETA" in lines[0] and "img/s" in lines[0] and "done in" in lines[-1]


def test_the_default_interval_prints_at_least_the_last_line(capsys) -> None:
    with progress_bar(100, "import") as bar:
        bar.advance(100)
    out = capsys.readouterr().err.splitlines()
    assert out and out[-1].startswith("import: 100/100 img (100%)")


def test_a_disabled_bar_prints_nothing(capsys) -> None:
    with progress_bar(10, "quiet", enabled=False) as bar:
        bar.advance(10)
    assert capsys.readouterr().err == ""


def test_piped_through_a_real_process() -> None:
    code = (
        "from cbir_pg.progress import progress_bar\n"
        "with progress_bar(4, 'eval', unit='queries') as b:\n"
        "    [b.advance() for _ in range(4)]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # on stderr, where the bar goes: stdout stays clean for --format json
    assert out.stderr.strip().startswith("eval: 4/4 queries (100%)") and out.stdout == ""
