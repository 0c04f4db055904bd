"""Pure parts of `cbir-pg serve`: filter parsing into a cohort, HTTP status mapping, the PNG cache."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cbir_pg.app.serve.store import check_k
from cbir_pg.app.serve.thumbs import PngCache, render_png
from cbir_pg.app.serve.web import UploadTooLarge, parse_filters, parse_k, status_of
from cbir_pg.cohort import Cohort
from cbir_pg.errors import ConfigError, DatabaseError, NotFoundError
from cbir_pg.images import DecodeError


def test_empty_form_fields_mean_any() -> None:
    f = parse_filters({"split": "", "dataset": " ", "label": "", "age_min": "", "exclude_same_patient": ""})
    assert f == Cohort() and f.is_empty() and f.as_params() == {}
    assert parse_k({"k": ""}) == 10 and parse_k({}) == 10 and parse_k({"k": "100"}) == 100


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"age_max": "abc"}, "must be a number"),
        ({"exclude_same_patient": "perhaps"}, "true or false"),
        ({"same_patient": "1", "exclude_same_patient": "1"}, "choose one"),
    ],
)
def test_unparseable_filters_are_config_errors(fields: dict, fragment: str) -> None:
    # values that parse but are wrong (a split, a sex, an empty age range, an unknown label) are
    # refused by the database's one validation, cbir.resolve_cohort: tests/db/test_cohort.py
    with pytest.raises(ConfigError, match=fragment):
        parse_filters(fields)


@pytest.mark.parametrize("k", [0, -1, 101, "5"])
def test_k_is_bounded(k) -> None:
    with pytest.raises(ConfigError):
        check_k(k)


def test_form_fields_become_one_cohort() -> None:
    f = parse_filters(
        {
            "label": "XR/chest/normal",
            "sex": "F",
            "age_min": "40",
            "age_max": "60",
            "exclude_same_patient": "on",
        }
    )
    assert f == Cohort(label="XR/chest/normal", sex="F", age_min=40.0, age_max=60.0, patient="other")
    assert f.as_json() == {
        "label": "XR/chest/normal",
        "sex": "F",
        "age_min": 40.0,
        "age_max": 60.0,
        "patient": "other",
    }
    assert f.as_params() == {
        "label": "XR/chest/normal",
        "sex": "F",
        "age_min": 40.0,
        "age_max": 60.0,
        "exclude_same_patient": True,
    }
    assert parse_filters({"same_patient": "true"}).as_params() == {"same_patient": True}


def test_status_codes() -> None:
    assert status_of(ConfigError("x")) == 400
    assert status_of(NotFoundError("x")) == 404
    assert status_of(UploadTooLarge("x")) == 413
    assert status_of(DecodeError("the upload", "decompression_bomb", "big")) == 413
    assert status_of(DecodeError("the upload", "not_an_image", "no")) == 415
    assert status_of(DatabaseError("x")) == 503
    assert status_of(RuntimeError("x")) == 500


def test_render_png_shrinks_but_never_enlarges() -> None:
    small = np.zeros((28, 30, 3), np.uint8)
    assert Image.open(io.BytesIO(render_png(small, 160))).size == (30, 28)
    big = np.zeros((400, 200, 3), np.uint8)
    assert Image.open(io.BytesIO(render_png(big, 160))).size == (80, 160)


def test_cache_renders_once_by_content(tmp_path) -> None:
    rgb = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    src = tmp_path / "a.png"
    Image.fromarray(rgb).save(src)
    from cbir_pg.images import decode_file, pixel_hash

    h = pixel_hash(decode_file(src))
    cache = PngCache(tmp_path / "cache")
    with pytest.raises(NotFoundError, match="pixel_hash_mismatch"):  # not the pixels the record holds
        cache.get(src, "ab" * 32, "t32", 32)
    png, key = cache.get(src, h, "t32", 32)
    assert key.startswith(h[:40]) and (tmp_path / "cache" / key[:2] / f"{key}.png").read_bytes() == png
    src.unlink()  # served from the cache now, without the file
    assert cache.get(src, h, "t32", 32) == (png, key)
    # without a content hash the file is decoded on every miss; a missing file is a 404 that names no path
    with pytest.raises(NotFoundError) as info:
        cache.get(src, None, "t32", 32)
    assert str(tmp_path) not in str(info.value)
