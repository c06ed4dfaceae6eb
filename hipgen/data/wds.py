"""webdataset tar shards (``{prefix}-%06d.tar``, or ``{prefix}-{split}-%06d.tar`` per split), one sample =
``<key>.png`` + ``<key>.json`` (the label record) + ``<key>.txt`` (the caption), as the LLCM recipe reads
them (published-methods §C).

Written with webdataset's ``TarWriter`` into a temp file that is renamed when the shard is complete;
read back with webdataset's tar iterators, one shard at a time so a bad shard can be named and skipped.
webdataset 1.x imports without torch (it stubs ``IterableDataset`` when torch is missing), so none of
this needs torch; ``tests/test_formats.py`` checks that with torch made unimportable.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import webdataset as wds
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_iterator

from hipgen.data.imagefolder import check_pixels, exact_pixels, png_text, stored_name
from hipgen.data.images import Radiograph, decode_image_bytes, encode_png
from hipgen.data.manifest import FileEntry, OnError, ReadReport, entry_for
from hipgen.data.record import LabelRecord
from hipgen.errors import CorruptFileError, InputError, LabelError

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-/]")


def sample_key(file_name: str) -> str:
    """webdataset splits member names at the first dot, so a key holds none."""
    return _UNSAFE.sub("_", stored_name(file_name, "")).strip("/")


class _Shard:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._f = open(self.tmp, "wb")  # noqa: SIM115 (closed in finish/abort)
        self.writer = wds.TarWriter(self._f, encoder=False, mtime=0, format="PAX_FORMAT")
        self.records: list[LabelRecord] = []

    def finish(self) -> None:
        self.writer.close()
        self._f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.close()
        self._f.close()
        self.tmp.unlink(missing_ok=True)


class WebDatasetWriter:
    format = "webdataset"

    def __init__(
        self, root: Path | str, *, prefix: str = "shard", maxcount: int = 1000, bits: int = 8
    ) -> None:
        if maxcount < 1:
            raise ValueError(f"maxcount must be ≥ 1, got {maxcount}")
        if bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, got {bits}")
        self.root, self.prefix, self.maxcount, self.bits = Path(root), prefix, maxcount, bits
        self.root.mkdir(parents=True, exist_ok=True)
        self.entries: list[FileEntry] = []
        self._open: dict[str | None, _Shard] = {}
        self._counts: dict[str | None, int] = {}
        self._keys: set[str] = set()

    def _shard(self, split: str | None) -> _Shard:
        sh = self._open.get(split)
        if sh is not None and len(sh.records) >= self.maxcount:
            self._finish(split)
            sh = None
        if sh is None:
            n = self._counts.get(split, 0)
            self._counts[split] = n + 1
            stem = self.prefix if split is None else f"{self.prefix}-{split}"
            sh = self._open[split] = _Shard(self.root / f"{stem}-{n:06d}.tar")
        return sh

    def _finish(self, split: str | None) -> None:
        sh = self._open.pop(split)
        sh.finish()
        self.entries.append(entry_for(self.root, sh.path.name, split=split, samples=tuple(sh.records)))

    def add(
        self,
        record: LabelRecord,
        pixels: np.ndarray,
        pixels16: np.ndarray | None = None,
        *,
        split: str | None = None,
    ) -> LabelRecord:
        check_pixels(pixels, pixels16)
        key = sample_key(record.file_name)
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} (from {record.file_name!r}) in one dataset")
        rec = replace(record, file_name=f"{key}.png")
        png = self._encode(rec, pixels, pixels16)
        sh = self._shard(split)
        sh.writer.write(
            {"__key__": key, "png": png, "json": json.dumps(rec.to_dict()).encode(), "txt": rec.text.encode()}
        )
        sh.records.append(rec)
        self._keys.add(key)
        return rec

    def _encode(self, rec: LabelRecord, pixels: np.ndarray, pixels16: np.ndarray | None) -> bytes:
        return encode_png(exact_pixels(pixels, pixels16), bits=self.bits, text=png_text(rec))

    def close(self) -> None:
        for split in list(self._open):
            self._finish(split)

    def abort(self) -> None:
        for sh in self._open.values():
            sh.abort()
        self._open.clear()


def shard_paths(root: Path | str) -> list[Path]:
    return sorted(p for p in Path(root).glob("*.tar") if p.is_file())


def iter_webdataset(
    root: Path | str, *, on_error: OnError = "raise", report: ReadReport | None = None
) -> Iterator[tuple[LabelRecord, Radiograph]]:
    """Samples of every ``*.tar`` under ``root`` in name order. A shard that is not a readable tar is
    named (samples before the damage are kept); a sample without png/json or with bad ones is named
    ``<shard>:<key>``."""
    report = report if report is not None else ReadReport()
    for shard in shard_paths(root):
        try:
            with open(shard, "rb") as f:
                for sample in group_by_keys(_members(shard, f, report)):
                    try:
                        out = _decode_sample(shard, sample)
                    except InputError as e:
                        report.handle(e, on_error)
                        continue
                    report.read += 1
                    yield out
        except (tarfile.TarError, EOFError, OSError) as e:
            why = f"not a readable tar shard ({type(e).__name__}: {_why(e)})"
            report.handle(CorruptFileError(shard, why), on_error)
        except ValueError as e:  # duplicate member names, from group_by_keys
            if isinstance(e, InputError):
                raise
            report.handle(CorruptFileError(shard, _why(e)), on_error)


def _why(e: Exception) -> str:
    """webdataset appends `` @ <stream>`` and extra args to messages; keep the message."""
    return str(e.args[0]).split(" @ ")[0] if e.args else type(e).__name__


def _members(shard: Path, f: BinaryIO, report: ReadReport) -> Iterator[dict]:
    """Tar members as webdataset's grouper wants them; a member that is no ``<key>.<ext>`` would be
    dropped by it without a word, so it is reported here."""
    for m in tar_file_iterator(f):
        if base_plus_ext(m["fname"])[0] is None:
            report.warnings.append(f"{shard}: member {m['fname']!r} is not <key>.<ext>; not read")
        yield {**m, "__url__": str(shard)}


def _decode_sample(shard: Path, sample: dict) -> tuple[LabelRecord, Radiograph]:
    src = f"{shard}:{sample['__key__']}"
    missing = [k for k in ("png", "json") if k not in sample]
    if missing:
        raise LabelError(src, f"sample has no {' or '.join(missing)}")
    try:
        data = json.loads(sample["json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptFileError(f"{src}.json", f"not UTF-8 JSON ({e})") from None
    if not isinstance(data, dict):
        raise LabelError(f"{src}.json", "label is not a JSON object")
    rec = LabelRecord.from_mapping(data, f"{src}.json")
    return rec, decode_image_bytes(sample["png"], source=f"{src}.png")
