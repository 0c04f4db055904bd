"""The README's demo sample matches the code that prints it (the real run is compared in
tests/db/test_real_medmnist.py::test_demo_end_to_end_reuses_what_exists)."""

from __future__ import annotations

from readme_sample import closing_lines, sample, step_lines

from cbir_pg.app.cli import demo as demo_cli
from cbir_pg.app.demo import STEPS


def test_sample_has_every_step_in_order() -> None:
    assert step_lines(sample()) == [f"[{i}/{len(STEPS)}] {name} ..." for i, name in enumerate(STEPS, 1)]


def test_sample_closing_lines_are_what_the_demo_prints() -> None:
    (line,) = closing_lines(sample())
    assert line == f"database: {demo_cli.SERVER_NOTE}"
    assert "`" not in sample()  # no literal backticks in the output
