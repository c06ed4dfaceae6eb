"""Reading and writing single radiographs: PNG (8/16-bit), JPEG, TIFF and DICOM, to one in-memory form.

In memory a radiograph is float32 in [0, 1], shape (H, W), bone bright (DESIGN §1). Every failure a
user's file can cause raises a typed :class:`hipgen.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from hipgen.errors import CorruptFileError, ImageTooLargeError, InputError, UnsupportedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


def max_pixels() -> int:
    """The pixel cap (decompression-bomb guard) from the settings: ``HIPGEN_MAX_IMAGE_PIXELS`` or the
    config file; the default sits a little above the largest real studies (4,300 px square is 18.5 MP)."""
    from hipgen.settings import get_settings

    return get_settings().max_image_pixels


@dataclass
class Radiograph:
    """One decoded radiograph and what is known about it (never patient identifiers)."""

    pixels: np.ndarray  # float32 (H, W) in [0, 1], bone bright
    source: str
    format: str  # "png", "jpeg", "tiff", "bmp", "dicom"
    bit_depth: int
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) spacing in mm
    metadata: dict[str, Any] = field(default_factory=dict)


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")


def is_dicom_bytes(head: bytes) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return is_dicom_bytes(f.read(132))
    except OSError:
        return False


def read_image(path: str | os.PathLike[str], *, pixel_cap: int | None = None) -> Radiograph:
    """Decode one file (DICOM by suffix or ``DICM`` magic, else anything Pillow reads)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such file")
    if looks_like_dicom(p):
        from hipgen.data.dicom import read_dicom  # pydicom is only imported when needed

        return read_dicom(p, pixel_cap=pixel_cap)
    return decode_image_bytes(p.read_bytes(), source=str(p), pixel_cap=pixel_cap)


def decode_image_bytes(data: bytes, *, source: str, pixel_cap: int | None = None) -> Radiograph:
    """Decode PNG/JPEG/TIFF/BMP bytes (or DICOM bytes) into a :class:`Radiograph`."""
    if is_dicom_bytes(data[:132]):
        from hipgen.data.dicom import read_dicom

        return read_dicom(io.BytesIO(data), source=source, pixel_cap=pixel_cap)
    cap = pixel_cap or max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > cap:
                raise ImageTooLargeError(source, f"{w}x{h} = {w * h} pixels exceeds the cap of {cap}")
            img.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(source, f"decompression bomb refused ({e})") from None
    except Image.UnidentifiedImageError:
        raise UnsupportedImageError(
            source, "not an image file hipgen can read (PNG, JPEG, TIFF, BMP, DICOM)"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptFileError(source, f"image data is truncated or corrupt ({e})") from None
    if getattr(img, "n_frames", 1) > 1:
        raise UnsupportedImageError(
            source, f"multi-frame image ({img.n_frames} frames); give one frame per file"
        )
    fmt = (img.format or "unknown").lower()
    pixels, depth = _to_unit_float(img, source)
    meta = {k: v for k, v in img.info.items() if isinstance(v, str)}
    return Radiograph(
        pixels=pixels, source=source, format="jpeg" if fmt == "mpo" else fmt, bit_depth=depth, metadata=meta
    )


def _to_unit_float(img: Image.Image, source: str) -> tuple[np.ndarray, int]:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(img, dtype=np.uint16).astype(np.float32) / 65535.0
        return a, 16
    if mode == "I":  # 32-bit ints, as Pillow opens most 16-bit PNGs
        a = np.asarray(img, dtype=np.int64)
        hi = 65535.0 if a.max(initial=0) > 255 else 255.0
        return (np.clip(a, 0, hi) / hi).astype(np.float32), 16 if hi > 255 else 8
    if mode == "F":
        a = np.asarray(img, dtype=np.float32)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        return ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32), 32
    if mode in ("L", "P", "1", "LA", "PA"):
        if mode == "P":
            img = img.convert("RGB")
            return _grey_from_rgb(np.asarray(img), source), 8
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0, 8
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        return _grey_from_rgb(np.asarray(img.convert("RGB")), source), 8
    raise UnsupportedImageError(source, f"pixel mode {mode} is not supported")


def _grey_from_rgb(rgb: np.ndarray, source: str) -> np.ndarray:
    """Accept RGB files whose three channels are equal (grey saved as colour, common in JPEG exports);
    refuse real colour images, which are not radiographs."""
    a = rgb.astype(np.int16)
    spread = np.abs(a[..., 0] - a[..., 1]).mean() + np.abs(a[..., 1] - a[..., 2]).mean()
    if spread > 6.0:  # JPEG chroma noise stays well below this on grey content
        raise UnsupportedImageError(source, "colour image: a radiograph must be grey-scale")
    return (a.mean(axis=-1) / 255.0).astype(np.float32)


# --- provenance -------------------------------------------------------------------------------------
PROVENANCE_MAX_CHARS = 200  # longest generator / model_version string read back from a file


@dataclass(frozen=True)
class Provenance:
    """hipgen's synthetic marker read back from a file: the label record's provenance fields."""

    synthetic: bool = True
    generator: str | None = None
    model_version: str | None = None
    seed: int | None = None

    def as_fields(self) -> dict[str, Any]:
        """The known fields, as keyword arguments of a label record (``LabelRecord.from_keypoints``)."""
        return {k: v for k, v in vars(self).items() if v is not None}


def synthetic_provenance(rad: Radiograph) -> Provenance | None:
    """The synthetic marker of a decoded file, or None for a real radiograph (or one without a marker).

    Reads the ``hipgen:*`` PNG text chunks (:func:`hipgen.data.imagefolder.png_text`) or the DICOM
    metadata keys (the private block of :func:`hipgen.data.dicom.write_synthetic_dicom`, or Conversion
    Type SYN). The file is untrusted: strings are cut to :data:`PROVENANCE_MAX_CHARS` characters and a
    seed that is not an integer in [0, 2**64) is dropped. JPEG carries no marker.
    """
    meta = rad.metadata
    prefix = "" if rad.format == "dicom" else "hipgen:"
    flag = meta.get(f"{prefix}synthetic")
    if not (flag is True or str(flag).strip().lower() == "true"):
        return None
    text = {}
    for key in ("generator", "model_version"):
        value = meta.get(f"{prefix}{key}")
        if value not in (None, ""):
            text[key] = str(value)[:PROVENANCE_MAX_CHARS]
    try:
        seed: int | None = int(str(meta.get(f"{prefix}seed", "")).strip())
    except ValueError:
        seed = None
    if seed is not None and not 0 <= seed < 2**64:
        seed = None
    return Provenance(True, text.get("generator"), text.get("model_version"), seed)


# --- writing ---------------------------------------------------------------------------------------
def to_uint(pixels: np.ndarray, bits: int) -> np.ndarray:
    """float [0, 1] → uint8/uint16 with rounding (the inverse of reading)."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    hi = 255 if bits == 8 else 65535
    return np.round(np.clip(pixels, 0.0, 1.0) * hi).astype(np.uint8 if bits == 8 else np.uint16)


def encode_png(pixels: np.ndarray, *, bits: int = 8, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of a grey image; ``text`` goes into tEXt chunks (the synthetic flag, DESIGN §6)."""
    arr = to_uint(pixels, bits)
    img = Image.fromarray(arr if bits == 8 else arr.astype("<u2"))  # Pillow infers L / I;16
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def encode_jpeg(pixels: np.ndarray, *, quality: int = 95, comment: str | None = None) -> bytes:
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"quality": quality}
    if comment:
        kwargs["comment"] = comment.encode()
    Image.fromarray(to_uint(pixels, 8)).save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a unique temp file in the same folder, fsync, then rename: a crash or a concurrent
    writer never leaves a half-written file (DESIGN §6), and a failed write leaves no temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
