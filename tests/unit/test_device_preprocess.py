"""Ingest's device-side preprocessing equals the CPU reference for every registered encoder, on real
images through the product's own pipeline pieces (worker decode → collate → batched preprocessing):
MedMNIST PNGs at native 28 x 28, the same images as larger non-square PNGs and JPEGs, and pydicom's real
DICOM files. Also the batched JPEG decode path (run on the CPU here; the same call runs on the GPU),
fast decode (PIL draft mode) and corrupt JPEGs in a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cbir_pg.encoders import list_encoders
from cbir_pg.encoders.device_preprocess import device_resize_supported
from cbir_pg.encoders.preprocess import preprocess_array
from cbir_pg.images import decode_file
from cbir_pg.ingest.claim import ClaimItem
from cbir_pg.ingest.pipeline import BatchPreprocessor, DecodeDataset, DecodeOptions, collate

#: PIL resamples in 8-bit fixed point with rounding after each pass; torch in float: at most this many
#: grey levels apart anywhere, and on average far less
MAX_LEVELS = 2.01
MEAN_LEVELS = 0.15


@pytest.fixture(scope="module")
def real_files(tmp_path_factory) -> dict[str, list]:
    """Real images as files: 28 x 28 PNGs, 300 x 420 PNGs and JPEGs (bicubic upscales), a few DICOMs."""
    from conftest import pydicom_test_files, require_data

    root = tmp_path_factory.mktemp("realimg")
    arrs = np.load(require_data() / "pneumoniamnist_subset.npz")["train_images"][:6]
    out: dict[str, list] = {"png28": [], "png_large": [], "jpeg_large": [], "dicom": []}
    for i, a in enumerate(arrs):
        p = root / f"s{i}.png"
        Image.fromarray(a).save(p)
        out["png28"].append(p)
        big = Image.fromarray(a).resize((420 - 10 * i, 300), Image.BICUBIC)
        p = root / f"b{i}.png"
        big.save(p)
        out["png_large"].append(p)
        p = root / f"j{i}.jpg"
        (big.convert("RGB") if i % 2 else big).save(p, quality=90)
        out["jpeg_large"].append(p)
    for f in pydicom_test_files():
        if f.name in ("MR_small.dcm", "CT_small.dcm", "US1_J2KR.dcm", "SC_rgb.dcm"):
            try:
                decode_file(f)
            except Exception:
                continue
            out["dicom"].append(f)
    return out


def _through_pipeline(config, files, options: DecodeOptions, uint8_resize: bool | None = None):
    ds = DecodeDataset(config, options)
    items = [ClaimItem(i + 1, str(p)) for i, p in enumerate(files)]
    loaded = collate([ds[it] for it in items])
    assert not loaded.failures, loaded.failures
    prep = BatchPreprocessor(config, "cpu", uint8_resize)
    ok_ids, x = prep(loaded, {it.image_id: it.path for it in items})
    assert ok_ids == [it.image_id for it in items]
    return x


def _levels(config, got, ref) -> torch.Tensor:
    """Absolute difference in grey levels (undoing the normalisation)."""
    return (got - ref).abs() * torch.tensor(config.std).view(1, 3, 1, 1) * 255.0


ENCODERS = list_encoders()


@pytest.mark.parametrize("path", ["uint8", "float"])
@pytest.mark.parametrize("config", ENCODERS, ids=[c.key for c in ENCODERS])
def test_device_preprocessing_equals_the_reference_for_every_encoder(config, path, real_files):
    """``uint8``: torch's uint8 resampling (the CPU path); ``float``: two rounded float passes (the
    CUDA path, run on the CPU here: the same torch ops)."""
    opts = DecodeOptions(resize_on_device=device_resize_supported(config))
    for kind in ("png28", "png_large", "jpeg_large", "dicom"):
        files = real_files[kind]
        if not files:
            continue
        ref = torch.stack([preprocess_array(config, decode_file(p)) for p in files])
        got = _through_pipeline(config, files, opts, uint8_resize=path == "uint8")
        assert got.shape == ref.shape and got.dtype == torch.float32
        lv = _levels(config, got, ref)
        if not opts.resize_on_device:  # resized by the reference, normalised on the device
            assert float(lv.max()) < 1e-3, (config.key, kind)
            continue
        assert float(lv.max()) <= MAX_LEVELS, (config.key, kind, float(lv.max()))
        assert float(lv.mean()) <= MEAN_LEVELS, (config.key, kind, float(lv.mean()))


def test_every_paper_encoder_resizes_on_the_device():
    assert [c.key for c in ENCODERS if not device_resize_supported(c)] == []


def test_batched_jpeg_decode_equals_the_cpu_decoder(real_files):
    config = next(c for c in ENCODERS if c.key == "efficientnet_lite0")
    files = real_files["jpeg_large"]
    ds = DecodeDataset(config, DecodeOptions(jpeg_on_device=True))
    samples = [ds[ClaimItem(i + 1, str(p))] for i, p in enumerate(files)]
    assert [s[1] for s in samples] == ["jpeg"] * len(files)  # the workers shipped bytes
    x = _through_pipeline(config, files, DecodeOptions(jpeg_on_device=True))
    ref = torch.stack([preprocess_array(config, decode_file(p)) for p in files])
    lv = _levels(config, x, ref)
    assert float(lv.max()) <= MAX_LEVELS and float(lv.mean()) <= MEAN_LEVELS


def test_a_corrupt_jpeg_in_a_device_decoded_batch_fails_alone_with_its_reason(real_files, tmp_path):
    config = next(c for c in ENCODERS if c.key == "efficientnet_lite0")
    good = real_files["jpeg_large"][:3]
    data = good[0].read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(data[: len(data) // 3])
    files = [good[0], bad, good[1], good[2]]
    ds = DecodeDataset(config, DecodeOptions(jpeg_on_device=True))
    items = [ClaimItem(i + 1, str(p)) for i, p in enumerate(files)]
    loaded = collate([ds[it] for it in items])
    failures = loaded.failures
    ok_ids, x = BatchPreprocessor(config, "cpu")(loaded, {it.image_id: it.path for it in items})
    reference = decode_failure = None
    try:
        decode_file(bad)
    except Exception as exc:
        decode_failure = exc
    if decode_failure is None:  # PIL pads a truncated JPEG only with LOAD_TRUNCATED_IMAGES
        reference = preprocess_array(config, decode_file(bad))
    if reference is None:
        assert ok_ids == [1, 3, 4] and x.shape[0] == 3
        assert [f.image_id for f in failures] == [2] and failures[0].reason == decode_failure.reason
    else:
        assert ok_ids == [1, 2, 3, 4]


def test_fast_decode_reads_large_jpegs_at_draft_size_and_stays_close(real_files, tmp_path):
    config = next(c for c in ENCODERS if c.key == "efficientnet_lite0")
    src = Image.open(real_files["jpeg_large"][1])
    big = tmp_path / "big.jpg"
    src.resize((1200, 1000), Image.BICUBIC).save(big, quality=92)
    fast = DecodeDataset(config, DecodeOptions(fast_decode=True))[ClaimItem(1, str(big))]
    exact = DecodeDataset(config, DecodeOptions())[ClaimItem(1, str(big))]
    assert fast[1] == exact[1] == "native"
    assert exact[2].shape == (1000, 1200, 3)
    assert fast[2].shape[0] < 1000 and min(fast[2].shape[:2]) >= config.input_size  # DCT-scaled
    x_fast = _through_pipeline(config, [big], DecodeOptions(fast_decode=True))
    ref = preprocess_array(config, decode_file(big))[None]
    lv = _levels(config, x_fast, ref)
    assert float(lv.mean()) < 3.0  # close, but not the exact path
    assert float(lv.max()) > 0.0
    png = tmp_path / "not_jpeg.png"
    Image.fromarray(decode_file(big)).save(png)
    assert DecodeDataset(config, DecodeOptions(fast_decode=True))[ClaimItem(2, str(png))][2].shape == (
        1000,
        1200,
        3,
    )


def test_decoded_images_cross_the_process_boundary_as_uint8(real_files):
    config = next(c for c in ENCODERS if c.key == "efficientnet_lite0")
    ds = DecodeDataset(config, DecodeOptions())
    loaded = collate([ds[ClaimItem(i + 1, str(p))] for i, p in enumerate(real_files["png28"])])
    assert [(k, t.dtype, tuple(t.shape)) for k, _, t in loaded.groups] == [
        ("native", torch.uint8, (len(real_files["png28"]), 28, 28, 3))
    ]


def test_a_lanczos_config_is_resized_by_the_reference_and_normalised_on_the_device(real_files):
    from dataclasses import replace

    config = replace(next(c for c in ENCODERS if c.key == "efficientnet_lite0"), interpolation="lanczos")
    assert not device_resize_supported(config)
    files = real_files["png_large"]
    x = _through_pipeline(config, files, DecodeOptions(resize_on_device=False))
    ref = torch.stack([preprocess_array(config, decode_file(p)) for p in files])
    assert torch.allclose(x, ref, atol=1e-5)
