"""What a reader's browser receives: a fresh 8-bit grey PNG holding the pixels and nothing else.

Every other byte of a source file can give its origin away (hipgen's ``hipgen:synthetic`` text chunks,
a JPEG comment or EXIF block, DICOM patient tags, even the bit depth or the file format), which would
unblind a reader study and could leak patient identifiers. So every image, real or synthetic, goes
through the same path: decode → percentile window (:func:`hipgen.angle.overlay.display_grey`) → area
downscale → a new PNG with only IHDR, IDAT and IEND chunks.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from hipgen.angle.overlay import display_grey
from hipgen.data.images import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    Radiograph,
    decode_image_bytes,
    is_dicom_bytes,
    read_image,
)
from hipgen.data.manifest import MANIFEST_NAME
from hipgen.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Files that sit beside images in hipgen data sets and are never shown.
SIDECAR_SUFFIXES = (".csv", ".json", ".jsonl", ".txt", ".mat", ".yaml", ".yml", ".md")

ImageSource = str | os.PathLike[str] | bytes | np.ndarray | Radiograph


@dataclass(frozen=True)
class DisplayImage:
    """A PNG ready for a browser; ``scale`` = displayed size / source size (≤ 1), so coordinates a reader
    clicks can be mapped back to the source image."""

    png: bytes
    width: int
    height: int
    scale: float


def _is_image_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix in DICOM_SUFFIXES:
        return True
    if suffix in SIDECAR_SUFFIXES or path.name == MANIFEST_NAME:
        return False
    try:  # DICOM exports often have no suffix at all (or a UID-like one)
        with open(path, "rb") as f:
            return is_dicom_bytes(f.read(132))
    except OSError:
        return False


def list_images(root: Path) -> list[Path]:
    """Every radiograph under ``root`` (PNG, JPEG, TIFF, BMP, DICOM by suffix or ``DICM`` magic), sorted.

    Hidden files and folders (which include :func:`hipgen.data.images.write_atomic`'s temporary files),
    manifests and label sidecars are skipped. A webdataset's samples live inside tar shards, which a
    browser cannot be sent one by one, so such a folder is refused with the command that converts it.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder")
    found: list[Path] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() == ".tar":
            raise InputError(
                root,
                f"holds tar shards ({rel}): a webdataset cannot be reviewed image by image; convert it "
                f"first: hipgen convert {root} OUT --to imagefolder",
            )
        if _is_image_file(path):
            found.append(path)
    return found


def _pixels_of(src: ImageSource) -> np.ndarray:
    if isinstance(src, Radiograph):
        return src.pixels
    if isinstance(src, np.ndarray):
        return src
    if isinstance(src, bytes | bytearray | memoryview):
        return decode_image_bytes(bytes(src), source="<upload>").pixels
    return read_image(src).pixels


def display_size(height: int, width: int, max_side: int) -> tuple[int, int, float]:
    """(height, width, scale) of the displayed image: the source size, or shrunk so its longer side is
    ``max_side`` (never enlarged: upsampling adds nothing a reader could use)."""
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return height, width, 1.0
    return max(1, round(height * scale)), max(1, round(width * scale)), scale


def encode_clean_png(grey: np.ndarray) -> bytes:
    """An 8-bit grey PNG built from the array alone (a new Pillow image has no info to carry over)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def display_png(src: ImageSource, *, max_side: int = 1024) -> DisplayImage:
    """Decode a radiograph (a path, file bytes, a :class:`Radiograph` or float pixels in [0, 1]) and
    return it as a fresh PNG of its windowed pixels, downscaled with area interpolation (no aliasing of
    trabecular texture, which readers look at) when its longer side exceeds ``max_side``.

    DICOM is windowed as :func:`hipgen.data.images.read_image` does (Modality LUT, VOI, MONOCHROME1
    inverted); every source then gets the same percentile window, so a 12-bit study stored in 16 bits is
    not shown dark and the display does not differ by format.
    """
    grey = display_grey(_pixels_of(src))
    h, w = grey.shape
    out_h, out_w, scale = display_size(h, w, max_side)
    if (out_h, out_w) != (h, w):
        grey = cv2.resize(grey, (out_w, out_h), interpolation=cv2.INTER_AREA)
    return DisplayImage(png=encode_clean_png(grey), width=out_w, height=out_h, scale=scale)


def png_chunk_types(data: bytes) -> list[str]:
    """The chunk types of a PNG in file order, e.g. ``["IHDR", "IDAT", "IEND"]`` (what tests check to
    prove that no text, EXIF or time chunk reaches a browser). Bytes after IEND, where nothing should
    hide either, raise ValueError like a truncated file."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG (bad signature)")
    types: list[str] = []
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError(f"truncated PNG: chunk header at byte {pos}")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        pos += 12 + length
        if pos > len(data):
            raise ValueError(f"truncated PNG: chunk {kind!r} runs past the end")
        types.append(kind)
        if kind == "IEND":
            if pos != len(data):
                raise ValueError(f"{len(data) - pos} bytes after IEND")
            break
    return types


def study_png(src: ImageSource, size: int) -> bytes:
    """A reader-study image: windowed as :func:`display_png`, centre-cropped to a square and resized
    to ``size``×``size``, so that every image reaches the reader with the same shape and size: a
    synthetic set rendered square at 512 px must not be told from rectangular real films by its
    outline or its resolution."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    grey = display_grey(_pixels_of(src))
    h, w = grey.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = grey[top : top + side, left : left + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return encode_clean_png(cv2.resize(square, (size, size), interpolation=interp))


def study_images(sources: list[ImageSource], max_size: int) -> tuple[int, list[bytes]]:
    """Every image of a study at one common size: the smallest shorter side among them, at most
    ``max_size``, so that every image is only ever downscaled (the same area filter for all; upscaling
    only the small synthetic ones would make them softer than real films, a tell). Two passes, so that
    a large study never holds all its pixels at once."""
    side = min([max_size, *(min(_pixels_of(src).shape) for src in sources)])
    return side, [study_png(src, side) for src in sources]
