"""The one decode path to RGB uint8: greyscale, 16-bit, palette, RGBA, CMYK and DICOM."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cbir_pg.images import DecodeError, decode_bytes, decode_file


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_greyscale_becomes_three_equal_channels():
    g = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    out = decode_bytes(_png(Image.fromarray(g)))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :, 0], g) and np.array_equal(out[:, :, 0], out[:, :, 2])


def test_16_bit_is_stretched_to_8_bit():
    g = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    out = decode_bytes(_png(Image.fromarray(g)))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[:, :, 0].reshape(-1).astype(int)) >= 0)  # order kept


def test_palette_image_maps_through_its_palette():
    p = Image.new("P", (8, 8))
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    p.putpixel((1, 1), 1)
    p.putpixel((2, 2), 2)
    out = decode_bytes(_png(p))
    assert (
        tuple(out[1, 1]) == (255, 0, 0) and tuple(out[2, 2]) == (0, 255, 0) and tuple(out[0, 0]) == (0, 0, 0)
    )


def test_rgba_is_composited_on_black():
    a = np.zeros((8, 8, 4), np.uint8)
    a[..., 0] = 200
    a[..., 3] = 255
    a[0, 0, 3] = 0  # fully transparent pixel
    out = decode_bytes(_png(Image.fromarray(a, "RGBA")))
    assert out.shape == (8, 8, 3) and tuple(out[1, 1]) == (200, 0, 0) and tuple(out[0, 0]) == (0, 0, 0)


def test_cmyk_jpeg_becomes_rgb():
    out = decode_bytes(_png(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"))
    assert out.shape == (16, 16, 3) and out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_dicom_files_from_pydicom_decode_to_rgb():
    from conftest import pydicom_test_files

    files = pydicom_test_files()
    assert files, "pydicom's bundled test files are missing"
    decoded = reasons = 0
    for path in files:
        try:
            out = decode_file(path)
        except DecodeError as exc:
            assert exc.reason and str(path) in str(exc)
            reasons += 1
            continue
        assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
        decoded += 1
    assert decoded >= 20
    mr = decode_file(next(p for p in files if p.name == "MR_small.dcm"))
    assert mr.shape == (64, 64, 3) and mr.max() == 255 and np.array_equal(mr[..., 0], mr[..., 1])


def test_broken_files_raise_decode_error_with_reason(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"nope")
    with pytest.raises(DecodeError) as e:
        decode_file(bad)
    assert e.value.reason == "not_an_image"
    with pytest.raises(DecodeError) as e:
        decode_file(tmp_path / "missing.png")
    assert e.value.reason == "missing_file"
