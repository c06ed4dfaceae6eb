"""DICOM in and out: read one radiograph, write a synthetic one that can never pass for a patient's, and
de-identify hospital files before anything is stored (DESIGN §1, §6).

Reading follows the standard display pipeline (PS3.3 C.11): stored values → Modality LUT (rescale or
LUT) → VOI (window or VOI LUT; min–max of the image when neither is present) → MONOCHROME1 inverted so
bone is bright → float32 in [0, 1]. Only single-frame grey-scale images are accepted; anything else
(colour, multi-frame, objects without pixels, undecodable or corrupt files) raises a typed
:class:`hipgen.errors.InputError` whose one-line message names the file. No pydicom or numpy exception
escapes, and pydicom's warnings about ordinary oddities of real files are silenced while reading.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder, pixel_array
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    UID_dictionary,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from hipgen import __version__
from hipgen.data.images import Radiograph, max_pixels, to_uint, write_atomic
from hipgen.data.record import LabelRecord
from hipgen.errors import CorruptFileError, ImageTooLargeError, InputError, UnsupportedImageError

#: Private block that carries the synthetic flag and provenance (PS3.5 §7.8.1).
PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "HIPGEN 1.0"
_P_SYNTHETIC, _P_GENERATOR, _P_MODEL_VERSION, _P_SEED, _P_LABELS = 0x01, 0x02, 0x03, 0x04, 0x05

#: Attributes that identify nobody and are worth showing (``Radiograph.metadata``, ``hipgen inspect``).
SAFE_KEYWORDS = (
    "Modality",
    "SOPClassUID",
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "BurnedInAnnotation",
    "ImageType",
    "Manufacturer",
    "ManufacturerModelName",
    "ConversionType",
    "BodyPartExamined",
    "ViewPosition",
    "PatientSpeciesDescription",
    "LossyImageCompression",
)
_MONO = ("MONOCHROME1", "MONOCHROME2")


@contextmanager
def _quiet() -> Iterator[list[warnings.WarningMessage]]:
    """Real files trip many harmless pydicom validation warnings; they are noise for a reader, so they
    are caught (and returned, since pydicom reports a truncated file only as a warning).
    (``catch_warnings`` is process-global on Python 3.11; at worst a concurrent thread's warning is lost.)"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _source_of(src: Path | BinaryIO | str, source: str | None) -> str:
    if source:
        return source
    if isinstance(src, str | os.PathLike):
        return str(src)
    return str(getattr(src, "name", "<stream>"))


def _text(v: Any, limit: int = 80) -> str:
    """A value from the file, made safe for a one-line message."""
    msg = " ".join(str(v).split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _short(e: BaseException) -> str:
    """An exception as one short line, for the reason of an :class:`InputError`."""
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."


# --- reading ---------------------------------------------------------------------------------------
_DEFLATED_UID = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


def inflate_limit(cap: int) -> int:
    """Most bytes a deflated data set may inflate to: a single frame at the pixel cap (4 bytes a sample,
    the widest grey-scale sample) plus 16 MiB of other elements."""
    return cap * 4 + 2**24


def _file_meta_end(head: bytes) -> tuple[int, bytes | None]:
    """Where the data set starts after the (Explicit VR Little Endian) file meta group, and the transfer
    syntax UID the group names (None without one)."""
    pos = 132 if head[128:132] == b"DICM" else 0
    ts = None
    while pos + 8 <= len(head) and struct.unpack_from("<H", head, pos)[0] == 0x0002:
        elem, vr = struct.unpack_from("<H", head, pos + 2)[0], head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            length, at = struct.unpack_from("<I", head, pos + 8)[0], pos + 12
        else:
            length, at = struct.unpack_from("<H", head, pos + 6)[0], pos + 8
        if elem == 0x0010:
            ts = head[at : at + length].rstrip(b"\0 ")
        pos = at + length
    return pos, ts


def _refuse_deflate_bomb(fp: BinaryIO, source: str, limit: int) -> None:
    """pydicom inflates a Deflated Explicit VR Little Endian data set whole, however large: a few MB of
    zeros become gigabytes. Inflate it here first, in chunks and without keeping the output, and refuse
    it once it passes ``limit`` bytes. Anything else is left for pydicom to parse (and judge)."""
    start = fp.tell()
    total = 0
    try:
        end, ts = _file_meta_end(fp.read(1 << 16))
        if ts != _DEFLATED_UID:
            return
        fp.seek(start + end)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        data = fp.read(1 << 20)
        # stop at the stream's end: what follows it (a data set's padding byte) stays in
        # unconsumed_tail, which fed again would loop for ever
        while data and total <= limit and not inflater.eof:
            total += len(inflater.decompress(data, 1 << 22))
            data = inflater.unconsumed_tail or fp.read(1 << 20)
    except (zlib.error, struct.error):
        return  # corrupt: pydicom reports it
    finally:
        fp.seek(start)
    if total > limit:
        raise ImageTooLargeError(
            source, f"deflated data set inflates to more than {limit} bytes (decompression bomb refused)"
        )


def _dcmread(
    src: Path | BinaryIO | str,
    source: str,
    *,
    stop_before_pixels: bool = False,
    max_inflated: int | None = None,
) -> Dataset:
    """Parse the data set. Files without the Part-10 preamble (old exports) are retried with
    ``force=True``; what still makes no sense is reported as corrupt. A deflated data set may inflate
    to at most ``max_inflated`` bytes (default: :func:`inflate_limit` of the settings' pixel cap)."""
    try:
        fp: BinaryIO = open(src, "rb") if isinstance(src, str | os.PathLike) else src  # noqa: SIM115
    except OSError as e:
        raise InputError(source, f"cannot open file ({_short(e)})") from None
    if not fp.seekable():  # a forced retry needs to rewind
        fp = io.BytesIO(fp.read())
    start = fp.tell()
    try:
        _refuse_deflate_bomb(
            fp, source, max_inflated if max_inflated is not None else inflate_limit(max_pixels())
        )
        with _quiet() as caught:
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels)
                if len(ds) == 0:
                    raise CorruptFileError(source, "no data set after the file meta (truncated file?)")
            except InvalidDicomError:
                fp.seek(start)
                ds = pydicom.dcmread(fp, force=True, stop_before_pixels=stop_before_pixels)
                tags = list(ds.keys())  # tags only: iterating the data set would convert every value
                if not any(t.group in (0x0008, 0x0010, 0x0020, 0x0028) for t in tags):
                    raise CorruptFileError(
                        source, "not a DICOM file (no DICM header and no readable data set)"
                    ) from None
        eof = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
        short = eof[0].split(" in file ")[0] if eof else _truncation(ds, fp)
        if short:
            raise CorruptFileError(source, f"file is truncated ({_text(short, 200)})")
        return ds
    except InputError:
        raise
    except Exception as e:  # any parse failure of a user's file is bad input, never a crash
        raise CorruptFileError(source, f"DICOM data set is truncated or corrupt ({_short(e)})") from None
    finally:
        if fp is not src:
            fp.close()


def _truncation(ds: Dataset, fp: BinaryIO) -> str | None:
    """pydicom reads a value, or an element header, cut off by the end of the file without complaint."""
    last = None
    for tag in sorted(ds.keys()):
        raw = last = ds.get_item(tag)
        if (
            isinstance(raw, RawDataElement)
            and isinstance(raw.value, bytes)
            and raw.length != 0xFFFFFFFF
            and len(raw.value) < raw.length
        ):
            return f"element {tag} holds {len(raw.value)} of {raw.length} bytes"
    if isinstance(last, RawDataElement) and last.value_tell is not None and last.length != 0xFFFFFFFF:
        left = fp.seek(0, io.SEEK_END) - (last.value_tell + last.length)
        if 0 < left < 8:  # too short for another element header
            return f"{left} stray bytes after the last element"
    return None


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    enc = getattr(ds, "original_encoding", (None, None))
    return {
        (True, True): ImplicitVRLittleEndian,
        (False, True): ExplicitVRLittleEndian,
        (False, False): ExplicitVRBigEndian,
    }.get(enc)


def _check_image(ds: Dataset, source: str, cap: int) -> None:
    """Every refusal that the header alone can decide, before a single pixel is decoded."""
    sop = ds.get("SOPClassUID")
    what = _text(UID(str(sop)).name if sop else ds.get("Modality") or "unknown object")
    if "DirectoryRecordSequence" in ds:
        raise UnsupportedImageError(source, "DICOMDIR (a media directory, not an image)")
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise UnsupportedImageError(source, f"float pixel data ({what}): not a radiograph")
    if "PixelData" not in ds:
        if "Rows" in ds or "Image Storage" in what:
            raise CorruptFileError(source, f"{what} without pixel data (truncated or stripped file)")
        raise UnsupportedImageError(source, f"no pixel data ({what}): not a radiograph")
    missing = [k for k in ("Rows", "Columns", "BitsAllocated") if ds.get(k) in (None, "")]
    if missing:
        raise CorruptFileError(source, f"image is missing {', '.join(missing)}")
    spp = _int(ds, "SamplesPerPixel", source)
    pi = _text(ds.get("PhotometricInterpretation") or "MONOCHROME2")
    if spp != 1 or pi not in _MONO:
        raise UnsupportedImageError(
            source,
            f"colour image ({pi}, {spp} samples per pixel): a radiograph must be grey-scale (MONOCHROME1/2)",
        )
    frames = _int(ds, "NumberOfFrames", source)
    if frames > 1:
        raise UnsupportedImageError(source, f"multi-frame image ({frames} frames); give one frame per file")
    rows, cols = _int(ds, "Rows", source), _int(ds, "Columns", source)
    if rows < 1 or cols < 1:
        raise CorruptFileError(source, f"image has no pixels ({rows}x{cols})")
    if rows * cols > cap:
        raise ImageTooLargeError(source, f"{cols}x{rows} = {rows * cols} pixels exceeds the cap of {cap}")
    ts = _transfer_syntax(ds)
    if ts is None:
        raise CorruptFileError(source, "transfer syntax unknown (no file meta) so pixels cannot be decoded")
    try:
        dec = get_decoder(ts)
    except NotImplementedError:
        raise UnsupportedImageError(
            source, f"transfer syntax {_text(ts.name)} has no pixel-data decoder in pydicom"
        ) from None
    if not dec.is_available:
        need = "; ".join(dec.missing_dependencies) or "a pixel-data plugin"
        raise UnsupportedImageError(
            source, f"transfer syntax {_text(ts.name)} cannot be decoded here: needs {need}"
        )


def _int(ds: Dataset, kw: str, source: str, default: int = 1) -> int:
    raw = ds.get(kw)
    try:
        return default if raw in (None, "") else int(raw)
    except (TypeError, ValueError):
        raise CorruptFileError(source, f"{kw} is not an integer ({str(raw)[:40]!r})") from None


def _first(v: Any) -> float:
    return float(v[0] if isinstance(v, MultiValue | list | tuple) else v)


def _voi(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """VOI per PS3.3 C.11.2.1: VOI LUT if present, else window (LINEAR, LINEAR_EXACT, SIGMOID), else the
    image's own min–max. Returns float64 in [0, 1] (MONOCHROME2 sense)."""
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        n, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
        lut = apply_voi(np.arange(first, first + n, dtype=np.int64), ds).astype(np.float64)
        lo, hi = float(lut.min()), float(lut.max())
        if hi > lo:
            out = apply_voi(np.rint(arr).astype(np.int64), ds).astype(np.float64)
            return (out - lo) / (hi - lo)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
        except (TypeError, ValueError, IndexError):
            c, w = math.nan, math.nan
        fn = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
        if math.isfinite(c) and math.isfinite(w):
            if fn == "SIGMOID" and w > 0:
                return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (arr - c) / w, -700, 700)))
            if fn == "LINEAR_EXACT" and w > 0:
                return np.clip((arr - c) / w + 0.5, 0.0, 1.0)
            if w > 1:
                return np.clip((arr - (c - 0.5)) / (w - 1.0) + 0.5, 0.0, 1.0)
            if w == 1:  # a threshold (PS3.3 C.11.2.1.2.1)
                return (arr >= c - 0.5).astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    """PixelSpacing (patient plane), else ImagerPixelSpacing (detector plane), as (row, column) mm."""
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            v = ds.get(kw)
            if v is not None and len(v) == 2:
                r, c = float(v[0]), float(v[1])
                if math.isfinite(r) and math.isfinite(c) and r > 0 and c > 0:
                    return (r, c)
        except Exception:  # a malformed spacing is treated as unknown
            continue
    return None


def _plain(v: Any) -> Any:
    if isinstance(v, MultiValue | list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, float | DSfloat):
        return float(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, UID):
        return v.name
    return str(v)


def _provenance(ds: Dataset) -> dict[str, Any]:
    """Synthetic flag and provenance from the hipgen private block (empty if there is none)."""
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except (KeyError, ValueError, TypeError):
        return {}
    out: dict[str, Any] = {}
    try:
        for key, off in (
            ("synthetic", _P_SYNTHETIC),
            ("generator", _P_GENERATOR),
            ("model_version", _P_MODEL_VERSION),
            ("seed", _P_SEED),
        ):
            if off in block and block[off].value not in (None, ""):
                out[key] = str(block[off].value)
        if "synthetic" in out:
            out["synthetic"] = out["synthetic"].strip().upper() == "TRUE"
        if "seed" in out:
            out["seed"] = int(out["seed"])
    except (ValueError, TypeError, KeyError):
        return {}
    return out


def is_synthetic(ds: Dataset) -> bool:
    """hipgen's private flag, or the standard Conversion Type SYN that other generators use."""
    return bool(_provenance(ds).get("synthetic")) or str(ds.get("ConversionType") or "").strip() == "SYN"


def _safe_metadata(ds: Dataset) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for kw in SAFE_KEYWORDS:
        try:
            v = ds.get(kw)
        except Exception:  # a malformed value is simply not shown
            continue
        if v is not None and v != "":
            meta[kw] = _plain(v)
    ts = _transfer_syntax(ds)
    if ts is not None:
        meta["TransferSyntax"] = ts.name
    meta["synthetic"] = is_synthetic(ds)
    meta.update({k: v for k, v in _provenance(ds).items() if k != "synthetic"})
    return meta


def _decode_failure(ds: Dataset, e: BaseException) -> str:
    """Why pixels did not decode, naming the syntax and the plugins that might do better."""
    ts = _transfer_syntax(ds)
    msg = f"pixel data do not decode ({_text(ts.name) if ts else 'unknown syntax'}: {_short(e)})"
    try:
        missing = get_decoder(ts).missing_dependencies if ts else []
    except NotImplementedError:
        missing = []
    return msg + (f"; a plugin not installed here may decode it: {'; '.join(missing)}" if missing else "")


def read_dicom(
    src: Path | BinaryIO | str, *, source: str | None = None, pixel_cap: int | None = None
) -> Radiograph:
    """Decode one single-frame grey-scale DICOM image into a :class:`Radiograph` (bone bright, [0, 1])."""
    name = _source_of(src, source)
    cap = pixel_cap or max_pixels()
    ds = _dcmread(src, name, max_inflated=inflate_limit(cap))
    with _quiet():
        try:
            _check_image(ds, name, cap)
        except InputError:
            raise
        except Exception as e:  # a malformed header value
            raise CorruptFileError(name, f"DICOM header is invalid ({_short(e)})") from None
        try:
            # pylibjpeg-rle (Rust) panics on some corrupt streams; pydicom's own RLE decoder raises instead
            raw = pixel_array(ds, decoding_plugin="pydicom" if _transfer_syntax(ds) == RLELossless else "")
            if raw.ndim != 2:
                raise UnsupportedImageError(name, f"decoded pixels have shape {raw.shape}, not 2-D")
            y = _voi(np.asarray(apply_modality_lut(raw, ds), dtype=np.float64), ds)
            if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
                y = 1.0 - y
            pixels = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=0.0).clip(0.0, 1.0).astype(np.float32)
            meta = _safe_metadata(ds)
            depth = _int(ds, "BitsStored", name, default=int(ds.BitsAllocated))
            spacing = _spacing(ds)
        except InputError:
            raise
        except MemoryError:
            raise ImageTooLargeError(name, "not enough memory to decode the pixels") from None
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as e:  # decoder or LUT failure on a user's file (pyo3 panics are BaseException)
            raise CorruptFileError(name, _decode_failure(ds, e)) from None
    return Radiograph(
        pixels=pixels, source=name, format="dicom", bit_depth=depth, pixel_spacing_mm=spacing, metadata=meta
    )


def dicom_summary(path: Path | str) -> dict[str, Any]:
    """Non-identifying facts for ``hipgen inspect``, without decoding pixels: whether hipgen would read
    the file, and if not, why."""
    name = str(path)
    ds = _dcmread(path, name)  # pixel bytes are read (bounded by the file size) but never decoded
    try:
        with _quiet():
            readable, reason = True, None
            try:
                _check_image(ds, name, max_pixels())
            except InputError as e:
                readable, reason = False, e.reason
            return {
                "file": name,
                "format": "dicom",
                **_safe_metadata(ds),
                "pixel_spacing_mm": _spacing(ds),
                "readable": readable,
                "refusal": reason,
                "has_labels": _labels_json(ds) is not None,
            }
    except Exception as e:
        raise CorruptFileError(name, f"DICOM header is corrupt ({_short(e)})") from None


# --- writing synthetic images -------------------------------------------------------------------------
def write_synthetic_dicom(path: Path | str, pixels: np.ndarray, **kwargs: Any) -> None:
    """:func:`synthetic_dicom_bytes` written atomically (DESIGN §6)."""
    write_atomic(Path(path), synthetic_dicom_bytes(pixels, **kwargs))


def synthetic_dicom_bytes(
    pixels: np.ndarray,
    *,
    record: LabelRecord | None,
    generator: str,
    model_version: str,
    seed: int | None,
    pixel_spacing_mm: tuple[float, float] | None,
    bits: int = 16,
    burned_in: bool | None = None,
) -> bytes:
    """A Secondary Capture file that says SYNTHETIC in every place a viewer or PACS looks
    (patient name and ID, image comments, Conversion Type SYN, ImageType DERIVED\\SECONDARY, a private
    block with provenance and the label record). ``burned_in``: whether the
    pixels carry text or drawn annotations (BurnedInAnnotation YES/NO); ``None`` (unknown, e.g. a
    converted image) leaves the attribute out."""
    a = np.asarray(pixels)
    if a.ndim != 2 or a.size == 0 or not np.isfinite(a).all():
        raise ValueError(f"pixels must be a finite 2-D array, got shape {a.shape}")
    stored = to_uint(a.astype(np.float64), bits)
    now = datetime.now()
    seed_txt = "" if seed is None else f" (seed {seed})"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.Modality = "OT"
    ds.ConversionType = "SYN"  # Synthetic Image (PS3.3 C.8.6.1)
    ds.Manufacturer = "hipgen"
    ds.ManufacturerModelName = generator
    ds.SoftwareVersions = __version__
    ds.ReferringPhysicianName = ""
    ds.PatientName = "SYNTHETIC^PHANTOM"
    ds.PatientID = "SYNTHETIC"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientSpeciesDescription = "Canis lupus familiaris"
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageComments = (
        f"SYNTHETIC image generated by hipgen {__version__} with {generator} "
        f"{model_version}{seed_txt}; not a patient radiograph"
    )
    if burned_in is not None:
        ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    # A full-range window makes every reader map stored value v to exactly v / (2**bits - 1).
    ds.WindowCenter, ds.WindowWidth = 2 ** (bits - 1), 2**bits
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = [DSfloat(float(v), auto_format=True) for v in pixel_spacing_mm]
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(_P_SYNTHETIC, "CS", "TRUE")
    block.add_new(_P_GENERATOR, "UT", generator)
    block.add_new(_P_MODEL_VERSION, "UT", model_version)
    if seed is not None:
        block.add_new(_P_SEED, "UT", str(int(seed)))
    if record is not None:
        # json writes floats with repr, so the record round-trips exactly
        block.add_new(_P_LABELS, "UT", json.dumps(record.to_dict(), ensure_ascii=True))
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _labels_json(ds: Dataset) -> str | None:
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        return str(block[_P_LABELS].value) if _P_LABELS in block else None
    except (KeyError, ValueError, TypeError):
        return None


def relabelled_dicom_bytes(data: bytes, record: LabelRecord, *, source: str = "<bytes>") -> bytes:
    """The same file with ``record`` as its label record: only the label element of the hipgen private
    block changes; pixels, UIDs and every other element are written back as stored (a label correction
    is not a new image)."""
    ds = _dcmread(io.BytesIO(data), source)
    try:
        with _quiet():
            block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except (KeyError, ValueError, TypeError):
        raise CorruptFileError(source, "no hipgen private block: not a hipgen synthetic DICOM file") from None
    buf = io.BytesIO()
    try:
        with _quiet():
            block.add_new(_P_LABELS, "UT", json.dumps(record.to_dict(), ensure_ascii=True))
            ds.save_as(buf, enforce_file_format=True)
    except Exception as e:
        raise CorruptFileError(source, f"cannot write the new label block ({_short(e)})") from None
    return buf.getvalue()


def read_synthetic_labels(path: Path | str) -> LabelRecord | None:
    """The label record stored by :func:`write_synthetic_dicom`, or None if the file holds none."""
    name = str(path)
    ds = _dcmread(path, name, stop_before_pixels=True)
    with _quiet():
        raw = _labels_json(ds)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise CorruptFileError(name, f"hipgen label block is not valid JSON ({_short(e)})") from None
    if not isinstance(data, dict):
        raise CorruptFileError(name, "hipgen label block is not a JSON object")
    return LabelRecord.from_mapping(data, source=name)


# --- de-identification ----------------------------------------------------------------------------
#: A subset of PS3.15 Annex E, Table E.1-1 (Basic Application Level Confidentiality Profile), by
#: keyword. Actions as in the standard: X remove, Z empty (PatientID: a salted pseudonym, which Z
#: permits as a "dummy value consistent with the VR", so splits can still group images by animal),
#: U replace UID consistently. On top of the table (see :func:`deidentify`): every PN is emptied,
#: every DA/DT/TM is emptied (dates are removed, not shifted: LongitudinalTemporalInformationModified
#: = REMOVED), every non-standard UID is remapped, private tags and curve/overlay groups are removed.
DEID_ACTIONS: dict[str, str] = {
    # patient
    "PatientName": "Z",
    "PatientID": "Z",
    "PatientBirthDate": "Z",
    "PatientBirthTime": "X",
    "PatientSex": "Z",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PatientAddress": "X",
    "PatientTelephoneNumbers": "X",
    "PatientMotherBirthName": "X",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "PatientBirthName": "X",
    "IssuerOfPatientID": "X",
    "MedicalRecordLocator": "X",
    "EthnicGroup": "X",
    "Occupation": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "PatientComments": "X",
    "AdditionalPatientHistory": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "InsurancePlanIdentification": "X",
    "PatientReligiousPreference": "X",
    "CountryOfResidence": "X",
    "RegionOfResidence": "X",
    "CurrentPatientLocation": "X",
    "PatientState": "X",
    "ResponsiblePerson": "Z",
    "ResponsiblePersonRole": "X",
    "ResponsibleOrganization": "X",  # owner
    "MedicalAlerts": "X",
    "Allergies": "X",
    "SmokingStatus": "X",
    "PregnancyStatus": "X",
    "LastMenstrualDate": "X",
    "SpecialNeeds": "X",
    "PatientTransportArrangements": "X",
    # people and places
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "RequestingPhysician": "X",
    "OperatorsName": "X",
    "OperatorIdentificationSequence": "X",
    "ScheduledPerformingPhysicianName": "X",
    "InstitutionName": "X",
    "InstitutionAddress": "X",
    "InstitutionalDepartmentName": "X",
    "InstitutionCodeSequence": "X",
    "StationName": "X",
    "DeviceSerialNumber": "X",
    "PlateID": "X",
    "DetectorID": "X",
    "GantryID": "X",
    "CassetteID": "X",
    "DeviceUID": "U",
    # study and request identifiers, free text
    "AccessionNumber": "Z",
    "StudyID": "Z",
    "RequestedProcedureID": "X",
    "ScheduledProcedureStepID": "X",
    "PerformedProcedureStepID": "X",
    "AdmissionID": "X",
    "IssuerOfAdmissionID": "X",
    "FillerOrderNumberImagingServiceRequest": "X",
    "PlacerOrderNumberImagingServiceRequest": "X",
    "RequestAttributesSequence": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedStudySequence": "X",
    "ReferencedPerformedProcedureStepSequence": "X",
    "StudyDescription": "X",
    "SeriesDescription": "X",
    "ImageComments": "X",
    "RequestedProcedureDescription": "X",
    "PerformedProcedureStepDescription": "X",
    "ProtocolName": "X",
    "AcquisitionComments": "X",
    "DerivationDescription": "X",
    "StudyComments": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmittingDiagnosesCodeSequence": "X",
    "TextComments": "X",
    "TextString": "X",
    "ContentCreatorName": "Z",
    "VerifyingObserverName": "X",
    "PersonName": "X",
    "IconImageSequence": "X",
    "OriginalAttributesSequence": "X",
    "DigitalSignaturesSequence": "X",
    "SourceApplicationEntityTitle": "X",
    # UIDs (all other non-standard UIDs are remapped too)
    "StudyInstanceUID": "U",
    "SeriesInstanceUID": "U",
    "SOPInstanceUID": "U",
    "FrameOfReferenceUID": "U",
    "MediaStorageSOPInstanceUID": "U",
    "ReferencedSOPInstanceUID": "U",
    "InstanceCreatorUID": "U",
    "SynchronizationFrameOfReferenceUID": "U",
    "IrradiationEventUID": "U",
}

#: UIDs that name a class or syntax, not an instance: never remapped.
_KEEP_UIDS = frozenset(
    {
        "SOPClassUID",
        "MediaStorageSOPClassUID",
        "ReferencedSOPClassUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "ReferencedSOPClassUIDInFile",
        "CodingSchemeUID",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "SOPClassesInStudy",
    }
)
DEID_METHOD = "PS3.15 E.1 Basic Profile (subset), hipgen"  # LO: at most 64 characters


def remap_uid(uid: str, salt: str) -> UID:
    """Same UID and salt → same new UID; unlinkable to the original without the salt. A 128-bit salted
    hash in the 2.25 (UUID-derived) form, as PS3.5 B.2 allows. (pydicom's ``generate_uid(prefix=None,
    entropy_srcs=...)`` ignores the entropy and returns a random UUID, so it cannot be used here.)"""
    digest = hashlib.sha256(f"{salt}\x00{uid}".encode()).digest()[:16]
    return UID(f"2.25.{int.from_bytes(digest, 'big')}")


def _pseudonym(value: str, salt: str) -> str:
    return "ANON-" + hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:16].upper()


def _deid_element(ds: Dataset, elem: DataElement, salt: str) -> None:
    kw, vr = elem.keyword, elem.VR
    action = DEID_ACTIONS.get(kw)
    if action == "X":
        del ds[elem.tag]
    elif kw == "PatientID":
        elem.value = _pseudonym(str(elem.value), salt) if elem.value else ""
    elif action == "Z" or vr in ("PN", "DA", "DT", "TM"):
        elem.value = None if vr == "SQ" else ""
    elif vr == "UI" and elem.value and kw not in _KEEP_UIDS:
        vals = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        new = [v if (action != "U" and str(v) in UID_dictionary) else remap_uid(v, salt) for v in vals]
        elem.value = new if len(new) > 1 else new[0]
    elif vr == "AS":  # ages not in the table are still quasi-identifiers
        del ds[elem.tag]


def deidentify(ds: Dataset, *, salt: str, allow_burned_in: bool = False) -> Dataset:
    """A de-identified copy of `ds` (the input is not changed); see :data:`DEID_ACTIONS` for what is done.

    Burned-in annotation: pixels can carry names that no header rule removes, and hipgen cannot find
    text in pixels, so an image with BurnedInAnnotation YES is refused (:class:`InputError`) unless
    `allow_burned_in` is True, in which case it is kept and still flagged YES for whoever reads it next.
    An absent BurnedInAnnotation is treated as unknown and allowed (most CR/DX files omit it).
    """
    if not salt:
        raise ValueError("deidentify needs a non-empty salt")
    source = getattr(ds, "filename", None) or "<dataset>"
    with _quiet():
        if str(ds.get("BurnedInAnnotation") or "").strip().upper() == "YES" and not allow_burned_in:
            raise InputError(
                str(source),
                "BurnedInAnnotation is YES: pixels may show patient identifiers; "
                "refusing to de-identify (pass allow_burned_in to keep it)",
            )
        out = copy.deepcopy(ds)
        out.remove_private_tags()
        for elem in list(out):  # curves (50xx) and overlays (60xx): may hold annotations
            g = elem.tag.group
            if g % 2 == 0 and (0x5000 <= g <= 0x50FF or 0x6000 <= g <= 0x60FF):
                del out[elem.tag]
        out.walk(lambda d, e: _deid_element(d, e, salt))
        meta = getattr(out, "file_meta", None)
        if meta is not None:
            meta.walk(lambda d, e: _deid_element(d, e, salt))
            if out.get("SOPInstanceUID"):  # Part 10 requires them equal, even where the source did not
                meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = f"{DEID_METHOD} {__version__}"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    out.DeidentificationMethodCodeSequence = [code]
    out.LongitudinalTemporalInformationModified = "REMOVED"
    return out


def deidentify_file(src: Path | str, dst: Path | str, *, salt: str, allow_burned_in: bool = False) -> None:
    """Read, de-identify and write atomically, keeping the pixel data and its transfer syntax."""
    name = str(src)
    ds = _dcmread(src, name)
    try:
        ds.filename = name
        out = deidentify(ds, salt=salt, allow_burned_in=allow_burned_in)
        meta = out.file_meta if getattr(out, "file_meta", None) is not None else FileMetaDataset()
        ts = _transfer_syntax(ds)
        if "TransferSyntaxUID" not in meta and ts is not None:
            meta.TransferSyntaxUID = ts
        if out.get("SOPClassUID"):
            meta.MediaStorageSOPClassUID = out.SOPClassUID
        if out.get("SOPInstanceUID"):
            meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        out.file_meta = meta
        buf = io.BytesIO()
        with _quiet():
            out.save_as(buf, enforce_file_format=True)
    except InputError:
        raise
    except Exception as e:
        raise CorruptFileError(name, f"cannot write a de-identified copy ({_short(e)})") from None
    write_atomic(Path(dst), buf.getvalue())
