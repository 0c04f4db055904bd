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


def decode_dicom(data: bytes, source: str) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DecodeError(source, "corrupt_dicom", str(exc) or "unreadable DICOM") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DecodeError(source, "dicom_no_pixels", "the DICOM file has no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # missing decoder plugins raise RuntimeError/NotImplementedError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "less than" in first and "pixel data" in first.lower():
            raise DecodeError(source, "dicom_truncated", first) from None
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", str(ts))
        raise DecodeError(
            source,
            "dicom_unsupported_transfer_syntax",
            f"cannot decode pixel data ({name}): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
        ) from None
    return dicom_pixels_to_rgb(ds, arr, source)


def dicom_pixels_to_rgb(ds, arr: np.ndarray, source: str) -> np.ndarray:
    """Rescale (modality LUT), window (VOI LUT), invert MONOCHROME1, then scale to 8-bit RGB."""
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
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR"):
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
        return _to_rgb(np.asarray(arr))
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
