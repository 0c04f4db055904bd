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
import warnings
from pathlib import Path

import numpy as np

from cbir_pg.errors import InputError

#: refuse images above this many pixels (decompression bombs); 16k x 16k covers any radiograph.
MAX_PIXELS = 16384 * 16384
#: refuse images smaller than this on either side (a 1x1 image carries no content).
MIN_SIDE = 4


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
    why = _non_image_reason(ds)
    if why:
        raise DecodeError(source, "dicom_not_an_image", why)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DecodeError(source, "dicom_no_pixels", "the DICOM file has no pixel data")
    _infer_transfer_syntax(ds)
    try:
        ds.pixel_array_options(as_rgb=True)  # YBR_* -> RGB exactly once, by pydicom
        arr = ds.pixel_array
    except Exception as exc:  # decoder plugins raise RuntimeError/NotImplementedError/ValueError/...
        raise _pixel_error(ds, exc, source) from None
    return dicom_pixels_to_rgb(ds, arr, source)


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
    arr = decode_dicom(data, source) if _is_dicom(data[:132], source) else decode_pil(data, source)
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise DecodeError(source, "image_too_small", f"{arr.shape[1]}x{arr.shape[0]} pixels")
    return np.ascontiguousarray(arr)


def decode_file(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB ``uint8``; a missing file is a :class:`DecodeError` too."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DecodeError(str(p), "missing_file", "no such file") from None
    except IsADirectoryError:
        raise DecodeError(str(p), "not_a_file", "is a directory") from None
    except OSError as exc:
        raise DecodeError(str(p), "unreadable_file", exc.strerror or str(exc)) from None
    except ValueError as exc:  # e.g. an embedded NUL byte in the path
        raise DecodeError(repr(str(p)), "bad_path", str(exc)) from None
    return decode_bytes(data, str(p))


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
