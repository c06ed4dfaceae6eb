"""Image sets to score, read from a folder (``file://`` or a plain path), an ``s3://`` prefix, or images
sent inline: decoded to grey, with each image's label record where the set has one and its *requested*
angles where a generator wrote them (``generation.jsonl`` from ``hipgen generate`` or a dataset job) —
angle fidelity compares those with what the angle model measures.

A folder in any hipgen dataset format is read with :func:`hipgen.data.datasets.iter_dataset`; a folder of
bare images (PNG, JPEG, TIFF, DICOM — a user's real radiographs with no labels) is read file by file.
Unreadable files are skipped and counted, never fatal.

Memory: images are kept as 8-bit pixels, shrunk (area-averaged) to at most ``max_side`` on their
longer side — every metric works well below that (feature backbones take ≤ 299 px, SSIM 256 px, the
angle model letterboxes to 192 px) — so 10,000 studies cost ≤ 2.6 GB, not the 700 GB of full-size floats.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload
from urllib.parse import urlparse

import cv2
import numpy as np

from hipgen.data.datasets import detect_format, iter_dataset
from hipgen.data.generation_log import GENERATION_LOG, read_generation_log
from hipgen.data.images import read_image
from hipgen.data.record import LabelRecord
from hipgen.errors import FieldError, InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"})
MAX_SIDE = 512  # pixels: the longer side images are kept at
S3_FILES_PER_IMAGE = 3  # image + sidecars (json, txt): the most objects an s3:// prefix may hold per image


class SetError(FieldError):
    """A set that cannot be scored; ``field`` names the request field (``reference`` or ``candidate``)."""


class UnitImages(Sequence[np.ndarray]):
    """8-bit images seen as float32 (H, W) in [0, 1], converted one at a time when read."""

    def __init__(self, pixels: list[np.ndarray] | None = None) -> None:
        self.pixels: list[np.ndarray] = pixels if pixels is not None else []

    def __len__(self) -> int:
        return len(self.pixels)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [p.astype(np.float32) / 255.0 for p in self.pixels[i]]
        return self.pixels[i].astype(np.float32) / 255.0

    def append(self, pixels: np.ndarray, max_side: int = MAX_SIDE) -> None:
        """Keep ``pixels`` (float [0, 1]) as 8 bits, shrunk to ``max_side`` when larger."""
        p = np.asarray(pixels, np.float32)
        s = max_side / max(p.shape)
        if s < 1.0:
            size = (max(1, round(p.shape[1] * s)), max(1, round(p.shape[0] * s)))
            p = cv2.resize(p, size, interpolation=cv2.INTER_AREA)
        self.pixels.append(np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8))


@dataclass
class ImageSet:
    images: Sequence[np.ndarray]  # float32 (H, W) in [0, 1] when read
    names: list[str]
    records: list[LabelRecord | None]
    requested: np.ndarray | None = None  # (N, 2) [left, right] degrees, NaN where unknown
    source: str = ""
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def _escapes(root: Path, base: Path) -> str | None:
    """The first entry under ``root`` whose real location is outside ``base`` (a symlinked file or
    folder pointing elsewhere), or None. Checked before anything is read, so no reader can follow one."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in (*dirnames, *filenames):
            p = Path(dirpath) / name
            if p.is_symlink() and not p.resolve().is_relative_to(base):
                return str(p.relative_to(root))
    return None


def resolve_inside(uri: str, base: Path) -> Path | str:
    """The resolved local folder of a ``file://`` URI or a path (relative ones from ``base``), or a
    one-line reason when it lies outside ``base`` or is not a folder — including through a symlink."""
    parsed = urlparse(uri)
    path = Path(parsed.path if parsed.scheme == "file" else uri)
    root = base.resolve()
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root):
        return "outside the server's data root"
    if not resolved.is_dir():
        return "no such folder"
    bad = _escapes(resolved, root)
    if bad is not None:
        return f"{bad} links outside the server's data root"
    return resolved


@contextmanager
def local_folder(uri: str, field_name: str, *, limit: int | None = None) -> Iterator[Path]:
    """``file://…`` or a path → that folder; ``s3://bucket/prefix`` → a temporary local copy (fsspec +
    s3fs, the endpoint from the usual AWS variables), removed afterwards. An s3 prefix holding more
    than ``S3_FILES_PER_IMAGE × limit`` objects is refused before anything is downloaded."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else uri)
        if not path.is_dir():
            raise SetError(field_name, f"{uri}: no such folder")
        yield path
        return
    if parsed.scheme != "s3":
        raise SetError(field_name, f"{uri}: only file:// and s3:// URIs are read")
    try:
        import fsspec

        fs = fsspec.filesystem("s3", skip_instance_cache=True)  # the endpoint/credentials of now
    except (ImportError, ValueError) as e:
        raise SetError(field_name, f"{uri}: reading s3:// needs s3fs installed ({e})") from None
    prefix = uri.rstrip("/") + "/"
    with tempfile.TemporaryDirectory(prefix="hipgen-score-") as tmp:
        try:
            if limit is not None:
                objects = fs.find(prefix)
                if len(objects) > S3_FILES_PER_IMAGE * limit + 8:
                    raise SetError(field_name, f"{uri}: {len(objects)} objects; the limit is {limit} images")
            fs.get(prefix, tmp, recursive=True)
        except (OSError, ValueError) as e:  # missing bucket or key, denied, unreachable endpoint
            if isinstance(e, SetError):
                raise
            raise SetError(field_name, f"{uri}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        yield Path(tmp)


def _requested(root: Path, field_name: str, shown: str) -> dict[str, tuple[float, float]]:
    try:
        return read_generation_log(root)
    except ValueError as e:
        raise SetError(field_name, f"{shown}: {e}") from None


def iter_folder(
    root: Path, *, field_name: str = "set", shown: str | None = None, skipped: list[str] | None = None
) -> Iterator[tuple[str, np.ndarray, LabelRecord | None]]:
    """``(name, float pixels at full size, record or None)`` for each readable image of a folder in any
    hipgen data set format, or of bare image files; unreadable files are appended to ``skipped``."""
    shown = shown or str(root)
    skipped = skipped if skipped is not None else []
    try:
        fmt: str | None = detect_format(root)
    except InputError:
        fmt = None
    if fmt is not None:
        reader = iter_dataset(root, on_error="skip", fmt=fmt)
        try:
            for record, rad in reader:
                yield record.file_name, rad.pixels, record
        except InputError as e:  # the folder's own structure (manifest, metadata.csv) is unreadable
            raise SetError(field_name, f"{shown}: {e.reason}") from None
        finally:
            skipped += [str(s) for s in reader.report.skipped]
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            rad = read_image(path)
        except (InputError, OSError, ValueError) as e:
            skipped.append(f"{path.name}: {e}")
            continue
        yield path.relative_to(root).as_posix(), rad.pixels, None


def read_folder(
    root: Path,
    *,
    limit: int,
    field_name: str = "set",
    on_image: Callable[[int], None] | None = None,
    shown: str | None = None,
    max_side: int = MAX_SIDE,
) -> ImageSet:
    """Read at most ``limit`` images (more is an error naming ``field_name``, not a silent cut).
    ``on_image(count)`` runs after each image (it may raise to stop the read); ``shown`` is how errors
    name the folder (a URI rather than a server path)."""
    shown = shown or str(root)
    images = UnitImages()
    names: list[str] = []
    records: list[LabelRecord | None] = []
    skipped: list[str] = []
    for name, pixels, record in iter_folder(root, field_name=field_name, shown=shown, skipped=skipped):
        if len(images) >= limit:
            raise SetError(field_name, f"{shown}: more than {limit} images (the limit)")
        images.append(pixels, max_side)
        names.append(name)
        records.append(record)
        if on_image:
            on_image(len(images))
    if not len(images):
        raise SetError(field_name, f"{shown}: no readable images")
    req = _requested(root, field_name, shown)
    requested = None
    if req:
        requested = np.array([req.get(n, (math.nan, math.nan)) for n in names], np.float64)
    return ImageSet(images, names, records, requested, shown, skipped)


def load_set(
    uri: str,
    *,
    limit: int,
    field_name: str = "set",
    on_image: Callable[[int], None] | None = None,
    max_side: int = MAX_SIDE,
) -> ImageSet:
    with local_folder(uri, field_name, limit=limit) as root:
        return read_folder(
            root, limit=limit, field_name=field_name, on_image=on_image, shown=uri, max_side=max_side
        )


__all__ = [
    "GENERATION_LOG",
    "MAX_SIDE",
    "ImageSet",
    "SetError",
    "UnitImages",
    "iter_folder",
    "load_set",
    "local_folder",
    "read_folder",
    "resolve_inside",
]
