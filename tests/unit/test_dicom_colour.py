"""DICOM decoding against pydicom's own reference files: every photometric interpretation to the right RGB,
every compressed transfer syntax the ``cbir-pg[dicom]`` decoders handle, and the real reason for files
that are not images or cannot be decoded.

The reference is ``SC_rgb_rle.dcm`` (lossless RLE of a 100x100 test card with pure colour stripes); the
same card is bundled re-encoded as RGB and YBR_FULL / YBR_FULL_422, uncompressed, JPEG, JPEG-LS, JPEG 2000
and RLE, so each must decode to the reference (exactly when lossless, closely when lossy).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cbir_pg.images import DICOM_DECODERS_HINT, DecodeError, decode_bytes

pydicom = pytest.importorskip("pydicom")
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
REPO = Path(__file__).resolve().parents[2]

#: (row, expected RGB) of the test card's stripes, read off the lossless reference
STRIPES = {5: (255, 0, 0), 15: (255, 128, 128), 25: (0, 255, 0), 45: (0, 0, 255), 95: (255, 255, 255)}


def _file(name: str) -> bytes:
    path = TEST_FILES / name
    if not path.exists():
        pytest.skip(f"pydicom test file {name} not bundled in this pydicom")
    return path.read_bytes()


def _decode(name: str) -> np.ndarray:
    return decode_bytes(_file(name), name)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    ref = _decode("SC_rgb_rle.dcm")
    for row, rgb in STRIPES.items():
        assert tuple(ref[row, 50]) == rgb
    return ref


LOSSLESS = [
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_16bit.dcm",
    "SC_rgb_rle_32bit.dcm",
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless, process 14
    "SC_rgb_gdcm_KY.dcm",  # JPEG 2000
]
# (file, stored photometric interpretation, max mean absolute error) for lossy or subsampled encodings
LOSSY = [
    ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422", 3.0),
    ("SC_rgb_dcmtk_+eb+cr.dcm", "RGB", 3.0),
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "YBR_FULL", 3.0),
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", "YBR_FULL", 3.0),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", "YBR_FULL_422", 3.0),
    ("SC_rgb_dcmtk_+eb+cy+s2.dcm", "YBR_FULL_422", 3.0),
    ("SC_rgb_dcmtk_+eb+cy+s4.dcm", "YBR_FULL", 3.0),
    ("SC_rgb_jpeg_dcmtk.dcm", "YBR_FULL", 3.0),
    ("SC_rgb_jpeg_lossy_gdcm.dcm", "YBR_FULL", 3.0),
    ("SC_rgb_jls_lossy_line.dcm", "RGB", 3.0),
    ("SC_rgb_jls_lossy_sample.dcm", "RGB", 3.0),
]


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_encodings_equal_the_reference(name, reference):
    assert np.array_equal(_decode(name), reference)


@pytest.mark.parametrize(("name", "photometric", "tol"), LOSSY)
def test_every_photometric_interpretation_decodes_to_rgb_once(name, photometric, tol, reference):
    ds = pydicom.dcmread(io.BytesIO(_file(name)), stop_before_pixels=True)
    assert ds.PhotometricInterpretation == photometric
    out = _decode(name).astype(int)
    assert np.abs(out - reference).mean() <= tol
    # the pure red stripe stays red: converted twice it came back as (75, 255, 27)
    red = out[3:8, 40:60].reshape(-1, 3).mean(0)
    assert red[0] > 230 and red[1] < 30 and red[2] < 30, red


def _dataset_like(name: str, arr: np.ndarray, photometric: str):
    ds = pydicom.dcmread(io.BytesIO(_file(name)))
    ds.PhotometricInterpretation = photometric
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return ds


def _save(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_uncompressed_ybr_full_is_converted_exactly_once(reference):
    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(reference, "RGB", "YBR_FULL")
    ds = _dataset_like("SC_rgb_rle.dcm", ybr, "YBR_FULL")
    out = decode_bytes(_save(ds), "ybr_full.dcm").astype(int)
    assert np.abs(out - reference).max() <= 2  # YCbCr rounding, nothing more


def _mct_flag(codestream: bytes) -> int:
    """The multiple-component-transform flag of a JPEG 2000 codestream's COD marker segment."""
    i = codestream.index(b"\xff\x52")  # COD: Lcod(2) Scod(1) progression(1) layers(2) MCT(1)
    return codestream[i + 2 + 2 + 1 + 1 + 2]


@pytest.mark.parametrize(
    ("syntax", "photometric", "tol"), [("JPEG2000Lossless", "YBR_RCT", 0), ("JPEG2000", "YBR_ICT", 4)]
)
def test_jpeg2000_ybr_rct_and_ict_decode_to_rgb(syntax, photometric, tol, reference):
    pytest.importorskip(
        "openjpeg", reason=f"JPEG 2000 encoding needs pylibjpeg-openjpeg: {DICOM_DECODERS_HINT}"
    )
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(io.BytesIO(_file("SC_rgb_rle.dcm")))
    ds.decompress()
    kwargs = {} if tol == 0 else {"j2k_cr": [10]}
    # RGB pixels in, the colour transform applied inside the codestream (PS3.5 8.2.4), stored as YBR_RCT/ICT
    ds.PhotometricInterpretation = photometric
    ds.compress(getattr(pydicom.uid, syntax), reference, use_mct=True, **kwargs)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert _mct_flag(frame) == 1
    out = decode_bytes(_save(ds), f"{photometric}.dcm").astype(int)
    assert np.abs(out - reference).max() <= max(tol * 8, 0) and np.abs(out - reference).mean() <= tol


def test_real_ybr_rct_files_decode():
    out = _decode("examples_jpeg2k.dcm")
    assert out.shape == (480, 640, 3) and out.std() > 10
    # the GDCM J2K test image: colour text, not refused as "unsupported photometric"
    assert _decode("GDCMJ2K_TextGBR.dcm").shape == (400, 400, 3)


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
    ],
)
def test_compressed_transfer_syntaxes_decode_to_the_uncompressed_pixels(name):
    assert np.array_equal(_decode(name), _decode("MR_small.dcm"))


def test_file_without_meta_header_decodes_with_inferred_syntax():
    ds = pydicom.dcmread(io.BytesIO(_file("MR_small.dcm")))
    buf = io.BytesIO()
    del ds.file_meta
    ds.preamble = None  # a bare dataset: no preamble, no 'DICM', no meta header
    ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=False)
    data = buf.getvalue()
    assert data[128:132] != b"DICM"
    assert np.array_equal(decode_bytes(data, "MR_small_nometa.dcm"), _decode("MR_small.dcm"))


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("liver_1frame.dcm", "Segmentation"),
        ("test-SR.dcm", "SR"),
        ("reportsi.dcm", "SR"),
        ("rtstruct.dcm", "RT Structure"),
        ("rtdose.dcm", "RT Dose"),
        ("waveform_ecg.dcm", "Waveform"),
    ],
)
def test_non_image_objects_are_refused_with_their_kind(name, words):
    with pytest.raises(DecodeError) as err:
        _decode(name)
    assert err.value.reason == "dicom_not_an_image" and words in err.value.detail and name in str(err.value)


def _rle_one_bit() -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "OT", 16, 16, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    packed = np.packbits(np.eye(16, dtype=np.uint8).ravel(), bitorder="little").tobytes()
    header = struct.pack("<16L", 1, 64, *([0] * 14))
    ds.PixelData = encapsulate([header + bytes([len(packed) - 1]) + packed])
    ds["PixelData"].VR = "OB"
    return _save(ds)


def test_undecodable_files_get_their_real_reason():
    with pytest.raises(DecodeError) as err:
        decode_bytes(_rle_one_bit(), "seg_rle.dcm")
    assert err.value.reason == "dicom_unsupported_transfer_syntax" and "1 bit allocated" in err.value.detail
    with pytest.raises(DecodeError) as err:
        _decode("MR_truncated.dcm")
    assert err.value.reason == "dicom_truncated"
    ds = pydicom.dcmread(io.BytesIO(_file("MR_small_jpeg_ls_lossless.dcm")))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.94"  # JPIP Referenced: no decoder exists
    with pytest.raises(DecodeError) as err:
        decode_bytes(_save(ds), "jpip.dcm")
    assert err.value.reason == "dicom_unsupported_transfer_syntax" and "JPIP" in err.value.detail


def test_missing_decoder_plugins_name_the_extra_to_install():
    """With the plugins made unimportable (as on an install without ``cbir-pg[dicom]``), a JPEG Lossless
    file is one line naming the extra, not pydicom's cut-off plugin list."""
    code = (
        "import sys\n"
        "for m in ('openjpeg', 'libjpeg', 'rle', 'gdcm', 'pylibjpeg'): sys.modules[m] = None\n"
        "from cbir_pg.images import decode_file, DecodeError\n"
        f"try:\n    decode_file({str(TEST_FILES / 'SC_rgb_jpeg_gdcm.dcm')!r})\n"
        "except DecodeError as e:\n    print(e.reason); print(e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "dicom_decoder_missing", out.stdout + out.stderr
    assert 'pip install "cbir-pg[dicom]"' in lines[1] and "JPEG Lossless" in lines[1] and len(lines) == 2


def _pydicom_data(name: str) -> Path:
    """A file of pydicom-data (pydicom's downloadable test files) when it is cached locally: pydicom keeps
    them in ``~/.cache/pydicom/data``; ``PYDICOM_DATA_DIR`` names another folder. Never downloaded here."""
    dirs = [os.environ.get("PYDICOM_DATA_DIR", ""), str(Path.home() / ".cache" / "pydicom" / "data")]
    for d in dirs:
        if d and (Path(d) / name).exists():
            return Path(d) / name
    pytest.skip(f"pydicom-data file {name} not cached (set PYDICOM_DATA_DIR to a pydicom-data checkout)")


def test_pydicom_data_references_when_cached():
    from cbir_pg.images import decode_file

    # JPEG 2000 lossless with the reversible colour transform equals the uncompressed file pixel for pixel
    assert np.array_equal(
        decode_file(_pydicom_data("US1_J2KR.dcm")), decode_file(_pydicom_data("US1_UNCR.dcm"))
    )
    # the uncompressed YBR_FULL test card: a pure red pixel stays red (converted twice it was (75, 255, 27))
    ybr = decode_file(_pydicom_data("SC_ybr_full_uncompressed.dcm"))
    assert ybr[5, 50, 0] >= 250 and ybr[5, 50, 1] <= 5 and ybr[5, 50, 2] <= 5
    # HTJ2K (lossless and lossy) decode to the same picture
    a = decode_file(_pydicom_data("HTJ2KLossless_08_RGB.dcm")).astype(int)
    b = decode_file(_pydicom_data("HTJ2K_08_RGB.dcm")).astype(int)
    assert a.shape == (480, 640, 3) and np.abs(a - b).mean() < 2
