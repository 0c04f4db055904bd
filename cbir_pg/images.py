"""One decode path from any image file to an RGB ``uint8`` array of shape ``(H, W, 3)``.

Handles PNG/JPEG/TIFF/BMP of any mode or bit depth (1-bit, L, LA, P, RGB, RGBA, CMYK, I;16, I, F) and
DICOM (modality LUT / rescale, then VOI LUT / windowing, MONOCHROME1 inverted). Import (pixel hashes,
dedupe) and ingest (the encoders' input) both use it, so the pixels that are hashed are the pixels
that are embedded.

Every failure raises :class:`DecodeError` with a short machine-readable ``reason`` (recorded in
``cbir.error``) and a message naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np

from cbir_pg.errors import InputError

#: refuse images above this many pixels (decompression bombs); 16k x 16k covers any radiograph.
MAX_PIXELS = 16384 * 16384
#: refuse images whose decoded pixels (width x height x bytes per pixel of the mode and bit depth) would
#: exceed this, before decoding: a 16384x16384 16-bit greyscale PNG of 0.5 MB decodes to 512 MiB (and
#: several GB of working copies). 256 MiB covers an 8-bit 16k x 16k image and any clinical radiograph.
MAX_DECODED_BYTES = 256 * 1024 * 1024
#: refuse images whose decode would need more working memory than this, at its peak: the decoded pixels
#: plus every copy the conversion to 8-bit RGB makes (a palette PNG with transparency is expanded to
#: RGBA, composited on a second RGBA image, then copied to RGB; a 16-bit image is stretched in float64).
#: A 261 kB 16384x16384 palette PNG with a tRNS chunk is 256 MiB decoded but 4 GiB at the peak.
MAX_WORKING_BYTES = 2 * 1024 * 1024 * 1024
#: refuse files larger than this (a stray video or disk image); a multi-frame DICOM series file is smaller.
MAX_FILE_BYTES = 1024 * 1024 * 1024
#: refuse images smaller than this on either side (a 1x1 image carries no content).
MIN_SIDE = 4

#: bytes per pixel of each PIL mode once decoded
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2,
               "I;16N": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4,
               "CMYK": 4, "I": 4, "F": 4}  # fmt: skip


class DecodeError(InputError):
    def __init__(self, source: str, reason: str, detail: str):
        self.source = source
        self.reason = reason
        self.detail = detail
        super().__init__(f"{source}: {reason}: {detail}")


def _is_dicom(head: bytes, name: str) -> bool:
    return head[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom"))


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale any numeric array to ``uint8``: 8-bit stays, other depths are min-max stretched."""
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.clip(np.round((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = to_uint8(arr)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return to_uint8(arr[:, :, :3])
    if arr.ndim == 3 and arr.shape[2] == 1:
        return _to_rgb(arr[:, :, 0])
    raise ValueError(f"unsupported array shape {arr.shape}")


def decode_pil(data: bytes, source: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            try:
                with Image.open(io.BytesIO(data)) as im:
                    if im.width * im.height > MAX_PIXELS:
                        raise DecodeError(source, "decompression_bomb", f"{im.width}x{im.height} pixels")
                    stored = _pil_bytes_per_pixel(im, data)
                    check_decoded_size(source, im.width, im.height, stored)
                    check_working_size(source, im.width, im.height, stored + _pil_conversion_bytes(im))
                    im.load()
                    return _pil_to_rgb(im)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(source, "decompression_bomb", str(exc).split(".")[0]) from None
    except UnidentifiedImageError:
        raise DecodeError(source, "not_an_image", "not a readable image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        reason = "truncated_image" if "truncated" in msg.lower() else "corrupt_image"
        raise DecodeError(source, reason, msg) from None


def check_decoded_size(source: str, width: int, height: int, bytes_per_pixel: float, frames: int = 1) -> None:
    """Refuse, before decoding, an image whose decoded pixels would exceed :data:`MAX_DECODED_BYTES`."""
    need = int(width) * int(height) * max(int(frames), 1) * max(float(bytes_per_pixel), 1.0)
    if need > MAX_DECODED_BYTES:
        raise DecodeError(
            source,
            "decompression_bomb",
            f"{width}x{height}"
            + (f"x{frames} frames" if frames > 1 else "")
            + f" at {bytes_per_pixel:g} bytes per pixel decodes to {need / 2**20:.0f} MiB"
            f" (limit {MAX_DECODED_BYTES / 2**20:.0f} MiB)",
        )


def check_working_size(source: str, width: int, height: int, bytes_per_pixel: float) -> None:
    """Refuse, before decoding, an image whose decode and conversion to 8-bit RGB would need more than
    :data:`MAX_WORKING_BYTES` at the peak (``bytes_per_pixel`` counts every copy alive at once)."""
    need = int(width) * int(height) * float(bytes_per_pixel)
    if need > MAX_WORKING_BYTES:
        raise DecodeError(
            source,
            "decompression_bomb",
            f"{width}x{height} needs {need / 2**20:.0f} MiB to decode and convert"
            f" ({bytes_per_pixel:g} bytes per pixel at the peak; limit {MAX_WORKING_BYTES / 2**20:.0f} MiB)",
        )


#: bytes per pixel of the float64 working copies :func:`to_uint8` makes of a deeper-than-8-bit channel
_STRETCH_BYTES = 3 * 8


def _pil_conversion_bytes(im) -> float:
    """Bytes per pixel that :func:`_pil_to_rgb` allocates on top of the decoded image, at its peak."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return 1 + 3  # the array's copy (greyscale) and the RGB result
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _STRETCH_BYTES + 1 + 3
    if mode == "1":
        return 1 + 3
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        return 4 + 4 + 4 + 3 + 3  # RGBA, the black background, the composite, RGB and its array
    return 3 + 3  # P, CMYK, YCbCr, LAB, HSV -> RGB and its array


def _pil_bytes_per_pixel(im, data: bytes) -> float:
    """Bytes per decoded pixel: the mode's, or the PNG header's bit depth x channels when larger (Pillow
    opens 16-bit RGB PNGs as 8-bit RGB but still inflates 6 bytes per pixel)."""
    bpp = float(_MODE_BYTES.get(im.mode, 4))
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26 and data[12:16] == b"IHDR":
        depth, colour = data[24], data[25]
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 4)
        bpp = max(bpp, channels * depth / 8)
    return bpp


def _pil_to_rgb(im) -> np.ndarray:
    mode = im.mode
    if mode in ("RGB", "L"):
        return _to_rgb(np.asarray(im))
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _to_rgb(np.asarray(im))
    if mode == "1":
        return _to_rgb(np.asarray(im.convert("L")))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # composite on black: radiology backgrounds are black
        rgba = im.convert("RGBA")
        from PIL import Image

        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))  # P, CMYK, YCbCr, LAB, HSV


#: the optional DICOM decoder plugins (JPEG Lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE), named in errors
DICOM_DECODERS_HINT = 'install the DICOM decoders: pip install "cbir-pg[dicom]"'

#: modalities of DICOM objects that are not images to embed (segmentations, reports, RT objects, ...)
NON_IMAGE_MODALITIES = frozenset(
    {
        "SEG",
        "SR",
        "KO",
        "PR",
        "DOC",
        "REG",
        "FID",
        "RWV",
        "PLAN",
        "RTSTRUCT",
        "RTPLAN",
        "RTDOSE",
        "RTRECORD",
        "ECG",
        "HD",
        "AU",
        "EPS",
        "RESP",
        "SMR",
        "M3D",
    }
)
#: words in an SOP class name that mark a non-image object whatever its modality attribute says
NON_IMAGE_SOP_WORDS = (
    "Segmentation",
    " SR ",
    "Structured Report",
    "Waveform",
    "Presentation State",
    "Key Object",
    "Encapsulated",
    "RT Structure",
    "RT Plan",
    "RT Dose",
    "Treatment Record",
    "Raw Data",
    "Registration",
    "Spectroscopy",
    "Surface",
    "Storage Commitment",
)
#: photometric interpretations whose pixels pydicom hands back as RGB (``as_rgb``, the default):
#: YBR_FULL(_422) are converted by pydicom itself, YBR_RCT/YBR_ICT by the JPEG 2000 decoder. They must
#: not be converted again: that turned a pure red pixel into (75, 255, 27).
COLOUR_AS_RGB = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420"})


def _non_image_reason(ds) -> str | None:
    """Why a DICOM object is not an image to embed (a SEG, an SR, an RT object, ...), or None."""
    modality = str(getattr(ds, "Modality", "") or "").upper()
    sop = getattr(ds, "SOPClassUID", None)
    sop_name = str(getattr(sop, "name", "") or "")
    padded = f" {sop_name} "
    if modality in NON_IMAGE_MODALITIES or any(w in padded for w in NON_IMAGE_SOP_WORDS):
        what = sop_name or "object"
        return f"{what} ({modality or 'no modality'}) is not an image to embed"
    return None


def _infer_transfer_syntax(ds) -> None:
    """Files without a meta header (or without its transfer syntax): take it from how pydicom read them.

    Only native (uncompressed) encodings can be inferred; encapsulated pixel data stays undecodable and
    gets its own reason.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return
    uid = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = uid


def _pixel_error(ds, exc: BaseException, source: str) -> DecodeError:
    """The real reason a DICOM's pixel data could not be decoded, as one line."""
    text = str(exc) or type(exc).__name__
    first = text.splitlines()[0]
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    ts_name = getattr(ts, "name", None) or (str(ts) if ts else "no transfer syntax")
    low = text.lower()
    if "less than" in first and "pixel data" in first.lower():
        return DecodeError(source, "dicom_truncated", first)
    if ts is None:
        return DecodeError(
            source,
            "dicom_no_transfer_syntax",
            "no file meta header names the transfer syntax of the pixel data",
        )
    if "missing dependencies" in low or "no pixel data decoders have been installed" in low:
        plugins = "; ".join(s.strip() for s in text.splitlines()[1:] if s.strip())
        detail = f"{ts_name} pixel data needs a decoder plugin: {DICOM_DECODERS_HINT}"
        return DecodeError(source, "dicom_decoder_missing", detail + (f" ({plugins})" if plugins else ""))
    bits = getattr(ds, "BitsAllocated", None)
    if bits == 1 and getattr(ts, "name", "") == "RLE Lossless":
        return DecodeError(
            source, "dicom_unsupported_transfer_syntax", "RLE Lossless with 1 bit allocated is not decodable"
        )
    if "missing required element" in low:
        return DecodeError(source, "dicom_incomplete_pixel_module", first)
    if isinstance(exc, NotImplementedError) or "is not supported" in low:
        return DecodeError(
            source,
            "dicom_unsupported_transfer_syntax",
            f"no decoder exists for {ts_name} pixel data: {first}",
        )
    detail = " ".join(s.strip() for s in text.splitlines() if s.strip())
    return DecodeError(source, "dicom_decode_failed", f"{ts_name}: {detail[:300]}")


def decode_dicom(data: bytes, source: str) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise DecodeError(source, "corrupt_dicom", str(exc) or "unreadable DICOM") from None
    return decode_dicom_dataset(ds, source)


def decode_dicom_dataset(ds, source: str) -> np.ndarray:
    """Decode a parsed pydicom ``Dataset`` (e.g. retrieved over DICOMweb or received by C-STORE) to RGB
    ``uint8`` by the same rules as a DICOM file; a non-image object is a :class:`DecodeError`."""
    why = _non_image_reason(ds)
    if why:
        raise DecodeError(source, "dicom_not_an_image", why)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DecodeError(source, "dicom_no_pixels", "the DICOM file has no pixel data")
    _check_dicom_size(ds, source)
    _infer_transfer_syntax(ds)
    try:
        ds.pixel_array_options(as_rgb=True)  # YBR_* -> RGB exactly once, by pydicom
        arr = ds.pixel_array
    except Exception as exc:  # decoder plugins raise RuntimeError/NotImplementedError/ValueError/...
        raise _pixel_error(ds, exc, source) from None
    return dicom_pixels_to_rgb(ds, arr, source)


def _check_dicom_size(ds, source: str) -> None:
    """The decoded size from the header (rows x columns x samples x bits allocated x frames)."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise DecodeError(source, "corrupt_dicom", "unreadable image size attributes") from None
    stored = samples * max(bits, 8) / 8
    check_decoded_size(source, cols, rows, stored, frames)
    # all frames decoded, then one frame rescaled and windowed in float64 and converted to RGB
    check_working_size(source, cols, rows, stored * max(frames, 1) + samples * _STRETCH_BYTES + 3 + 3)


def dicom_pixels_to_rgb(ds, arr: np.ndarray, source: str) -> np.ndarray:
    """Rescale (modality LUT), window (VOI LUT), invert MONOCHROME1, then scale to 8-bit RGB.

    ``arr`` comes from pydicom with ``as_rgb=True``: colour images are already RGB whatever their
    stored photometric interpretation (see :data:`COLOUR_AS_RGB`); a palette is applied here.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[frames // 2]  # the middle frame of a multi-frame object
    if photometric.startswith("MONOCHROME"):
        out = apply_modality_lut(arr, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            out = apply_voi_lut(out, ds, index=0)
        out = to_uint8(np.asarray(out, dtype=np.float64))
        if photometric == "MONOCHROME1":
            out = 255 - out
        return _to_rgb(out)
    if photometric in COLOUR_AS_RGB:
        return _to_rgb(np.asarray(arr))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return _to_rgb(np.asarray(apply_color_lut(arr, ds)))
    raise DecodeError(source, "unsupported_photometric", f"photometric interpretation {photometric}")


def decode_bytes(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode image bytes (any supported format) to RGB ``uint8``."""
    if not data:
        raise DecodeError(source, "empty_file", "the file is empty")
    try:
        arr = decode_dicom(data, source) if _is_dicom(data[:132], source) else decode_pil(data, source)
    except MemoryError:
        # whatever the guards above missed: one recorded line, never a raw MemoryError
        raise DecodeError(source, "out_of_memory", "not enough memory to decode the image") from None
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise DecodeError(source, "image_too_small", f"{arr.shape[1]}x{arr.shape[0]} pixels")
    return np.ascontiguousarray(arr)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_regular(source: str, st: os.stat_result, max_bytes: int) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError(source, "not_a_file", "is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError(source, "not_a_regular_file", f"is {_file_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise DecodeError(source, "file_too_large", f"{st.st_size} bytes (limit {max_bytes})")


def stat_regular_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> os.stat_result:
    """``os.stat`` of a regular file (symlinks followed) no larger than ``max_bytes``; anything else
    (missing, a directory, a FIFO, a device, a socket, too large) is a :class:`DecodeError`."""
    source = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DecodeError(source, "missing_file", "no such file") from None
    except ValueError as exc:  # e.g. an embedded NUL byte in the path
        raise DecodeError(repr(source), "bad_path", str(exc)) from None
    except OSError as exc:
        raise DecodeError(source, "unreadable_file", exc.strerror or str(exc)) from None
    _check_regular(source, st, max_bytes)
    return st


def read_regular_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file, read without ever blocking or reading without end.

    The path is checked with ``stat`` first (a FIFO, ``/dev/zero`` or a symlink to either is refused
    without being opened), then opened with ``O_NONBLOCK`` (opening a FIFO swapped in meanwhile cannot
    block) and checked again with ``fstat`` on the open descriptor, and at most ``max_bytes + 1`` bytes
    are read."""
    source = str(path)
    stat_regular_file(path, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DecodeError(source, "missing_file", "no such file") from None
    except OSError as exc:
        raise DecodeError(source, "unreadable_file", exc.strerror or str(exc)) from None
    try:
        with os.fdopen(fd, "rb", closefd=True) as fh:
            _check_regular(source, os.fstat(fh.fileno()), max_bytes)
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise DecodeError(source, "unreadable_file", exc.strerror or str(exc)) from None
    if len(data) > max_bytes:
        raise DecodeError(source, "file_too_large", f"more than {max_bytes} bytes")
    return data


def decode_file(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB ``uint8``. Only regular files are read (:func:`read_regular_file`);
    a missing file, a FIFO, a device, a directory or an oversized file is a :class:`DecodeError` too."""
    p = Path(path)
    # imported from a PACS with --no-copy: a reference file, the instance fetched again now (pacs/fetch.py)
    if p.suffix == ".dcmref":
        from cbir_pg.pacs.fetch import FetchError, retrieve_reference

        source = f"sop:{p.stem}"
        try:
            ds = retrieve_reference(read_regular_file(p, max_bytes=64 * 1024))
        except FetchError as exc:
            raise DecodeError(source, exc.reason, exc.detail) from None
        return decode_dicom_dataset(ds, source)
    return decode_bytes(read_regular_file(p), str(p))


def verify_pixels(rgb: np.ndarray, expected_hash: str | None, source: str) -> str:
    """The pixel hash of ``rgb``; a :class:`DecodeError` ``pixel_hash_mismatch`` when the record holds
    another one (the file was replaced after import, or belongs to another import)."""
    got = pixel_hash(rgb)
    if expected_hash and got != expected_hash:
        raise DecodeError(
            source,
            "pixel_hash_mismatch",
            f"decoded pixels hash to {got[:16]}, the database records {expected_hash[:16]}"
            " (the file was replaced or belongs to another import)",
        )
    return got


def read_image(
    path: str | Path, expected_hash: str | None = None, source: str | None = None
) -> tuple[np.ndarray, str]:
    """The one guarded reader of a stored image's file, for import, ingest, search, the report and the
    page: ``(rgb, pixel hash)``. Only a regular file within :data:`MAX_FILE_BYTES` is read (a FIFO, a
    device, ``/dev/zero`` behind a symlink are refused without blocking), the decode is bounded before
    it starts, and the pixels must hash to ``expected_hash`` (the record's ``content_hash``) when one is
    given. ``source`` names the file in errors (default: the path)."""
    name = source or str(path)
    try:
        data = read_regular_file(path)
    except DecodeError as exc:
        raise DecodeError(name, exc.reason, exc.detail) from None
    rgb = decode_bytes(data, name)
    return rgb, verify_pixels(rgb, expected_hash, name)


def pixel_hash(rgb: np.ndarray) -> str:
    """sha256 of the decoded pixels and their shape: identical images share it whatever the file format."""
    h = hashlib.sha256()
    h.update(np.asarray(rgb.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
    return h.hexdigest()


def perceptual_hash(rgb: np.ndarray) -> str:
    """pHash (ImageHash, 64 bits, hex) of the greyscale image, for near-duplicate detection."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(rgb).convert("L")))
