"""CBIR_PG_DATA_ROOT: stored dataset roots remapped to where this machine (or container) sees them."""

from __future__ import annotations

import pytest

from cbir_pg.errors import ConfigError
from cbir_pg.roots import local_root


def test_longest_prefix_wins_and_unmatched_roots_stay(monkeypatch) -> None:
    monkeypatch.setenv("CBIR_PG_DATA_ROOT", "/home/me/data=/data; /home/me/data/chexpert=/mnt/cx/")
    assert local_root("/home/me/data/nih14") == "/data/nih14"
    assert local_root("/home/me/data") == "/data"
    assert local_root("/home/me/data/chexpert") == "/mnt/cx"
    assert local_root("/home/me/data/chexpert/v1") == "/mnt/cx/v1"
    assert local_root("/home/me/database") == "/home/me/database"  # a prefix of the name, not of the path
    assert local_root("/elsewhere") == "/elsewhere" and local_root(None) is None


def test_unset_is_identity_and_malformed_is_one_line(monkeypatch) -> None:
    monkeypatch.delenv("CBIR_PG_DATA_ROOT", raising=False)
    assert local_root("/a/b") == "/a/b"
    monkeypatch.setenv("CBIR_PG_DATA_ROOT", "/a/b")
    with pytest.raises(ConfigError, match="OLD=NEW"):
        local_root("/a/b")


def test_ingest_and_search_read_remapped_files(monkeypatch, tmp_path) -> None:
    from cbir_pg.ingest.claim import image_path

    monkeypatch.setenv("CBIR_PG_DATA_ROOT", f"/host/datasets={tmp_path}")
    assert image_path("/host/datasets/breastmnist", "train/1.png") == f"{tmp_path}/breastmnist/train/1.png"
