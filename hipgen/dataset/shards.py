"""Writing a dataset job shard by shard, and the final manifest.

A shard's images are written by hipgen's own format writers (:data:`hipgen.data.datasets.WRITERS`,
each file atomic) under stable names (``000123.png`` for global image 123), then a *shard record*
``_shards/000004.json`` is written last. The shard record is the completion marker: a shard whose
record exists is done; any other shard is simply run again — its seeds come from (job seed, shard),
so a re-run writes the same files over whatever a killed run left.

:func:`finalize` merges the shard records into the data set's ``manifest.json`` (every file with its
sha256; exactly ``count`` labelled images), adds ``metadata.csv`` (image folders) and
``generation.jsonl`` (requested angles, which ScoreService reads), removes the shard records and any
temp files, and reports requested-vs-measured fidelity.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hipgen.data.datasets import WRITERS
from hipgen.data.generation_log import GENERATION_LOG
from hipgen.data.imagefolder import METADATA_NAME
from hipgen.data.keypoints import encode_csv
from hipgen.data.manifest import MANIFEST_NAME, FileEntry, Manifest, bytes_entry, store
from hipgen.data.record import LabelRecord
from hipgen.dataset.destination import Destination
from hipgen.dataset.spec import JobSpec, file_stem

SHARDS_DIR = "_shards"
REVIEW_DIR = "review"


class IncompleteJobError(RuntimeError):
    """Finalising found shards without a record, or a count that does not add up."""


@dataclass(frozen=True)
class KeptImage:
    """One image a shard keeps: its global index, label record, pixels (float in [0, 1]) and request."""

    index: int
    record: LabelRecord
    pixels: np.ndarray
    requested: tuple[float, float]
    split: str | None = None
    attempts: int = 1
    within_tolerance: bool = True


@dataclass(frozen=True)
class RejectedAttempt:
    """A generated image the tolerance filter rejected (kept for review: regenerate it from its seed)."""

    index: int
    seed: int
    requested: tuple[float, float]
    measured: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file_name": file_stem(self.index),
            "seed": self.seed,
            "requested_na_left": self.requested[0],
            "requested_na_right": self.requested[1],
            "measured_na_left": self.measured[0],
            "measured_na_right": self.measured[1],
        }


@dataclass
class ShardRecord:
    """What one finished shard wrote."""

    shard: int
    entries: list[FileEntry]
    requested: list[tuple[float, float]]  # per image, in image order (``names``)
    measured: list[tuple[float, float]] | None  # None: not measured
    rejected: int = 0
    out_of_tolerance: int = 0
    names: list[str] = field(default_factory=list)  # file stems in image order (writers may group by split)

    @property
    def images(self) -> int:
        return sum(len(e.samples) + (e.record is not None) for e in self.entries)

    @property
    def bytes(self) -> int:
        return sum(e.bytes for e in self.entries)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "shard": self.shard,
                "entries": [e.to_dict() for e in self.entries],
                "requested": self.requested,
                "measured": self.measured,
                "rejected": self.rejected,
                "out_of_tolerance": self.out_of_tolerance,
                "names": self.names,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> ShardRecord:
        d = json.loads(data)
        return cls(
            shard=int(d["shard"]),
            entries=[FileEntry.from_dict(e, source) for e in d["entries"]],
            requested=[tuple(a) for a in d["requested"]],
            measured=None if d["measured"] is None else [tuple(a) for a in d["measured"]],
            rejected=int(d["rejected"]),
            out_of_tolerance=int(d["out_of_tolerance"]),
            names=[str(n) for n in d.get("names", ())],
        )


def shard_record_path(shard: int) -> str:
    return f"{SHARDS_DIR}/{shard:06d}.json"


def read_shard_record(dest: Destination, shard: int) -> ShardRecord | None:
    data = dest.get(shard_record_path(shard))
    return None if data is None else ShardRecord.from_json(data, dest.uri_of(shard_record_path(shard)))


def write_shard(
    dest: Destination,
    spec: JobSpec,
    shard: int,
    kept: Sequence[KeptImage],
    rejected: Sequence[RejectedAttempt] = (),
) -> ShardRecord:
    """Write the shard's images (and its rejected attempts, for review), then its record."""
    opts: dict[str, Any] = {"prefix": f"shard-{shard:06d}"} if spec.format == "webdataset" else {}
    with dest.staging() as root:
        writer = WRITERS[spec.format](root, **opts)
        try:
            for k in kept:
                writer.add(replace(k.record, file_name=file_stem(k.index)), k.pixels, split=k.split)
            if spec.format == "webdataset":
                writer.close()  # finishes the shard's tar; the image-folder close would write metadata.csv
        except BaseException:
            abort = getattr(writer, "abort", None)
            if abort is not None:
                abort()  # no open tar or temp file left behind
            raise
        entries = list(writer.entries)
        if rejected:
            lines = "".join(json.dumps(r.to_dict()) + "\n" for r in rejected).encode()
            entries.append(store(root, f"{REVIEW_DIR}/rejected-{shard:06d}.jsonl", lines))
        dest.upload(root, [e.path for e in entries])
    record = ShardRecord(
        shard=shard,
        entries=entries,
        requested=[k.requested for k in kept],
        measured=None
        if spec.labels == "requested"
        else [(k.record.na_left, k.record.na_right) for k in kept],
        rejected=len(rejected),
        out_of_tolerance=sum(not k.within_tolerance for k in kept),
        names=[file_stem(k.index) for k in kept],
    )
    dest.put(shard_record_path(shard), record.to_json())
    return record


@dataclass(frozen=True)
class Fidelity:
    """Requested vs measured angles (both sides of every image)."""

    angles: int
    mae_deg: float
    pearson_r: float

    @classmethod
    def of(cls, requested: np.ndarray, measured: np.ndarray) -> Fidelity:
        req, mea = np.asarray(requested, float).ravel(), np.asarray(measured, float).ravel()
        ok = np.isfinite(req) & np.isfinite(mea)
        req, mea = req[ok], mea[ok]
        if len(req) == 0:
            return cls(0, math.nan, math.nan)
        r = (
            float(np.corrcoef(req, mea)[0, 1])
            if len(req) > 1 and req.std() > 0 and mea.std() > 0
            else math.nan
        )
        return cls(int(len(req)), float(np.abs(mea - req).mean()), r)


@dataclass(frozen=True)
class FinalResult:
    manifest: Manifest
    fidelity: Fidelity | None
    rejected: int
    out_of_tolerance: int


def finalize(
    dest: Destination, spec: JobSpec, provenance: dict[str, Any], *, partial: bool = False
) -> FinalResult:
    """Merge every shard record into the manifest (see the module docstring). ``partial`` (a cancelled
    job): list the shards that finished, however many. Idempotent: after a crash between writing the
    manifest and cleaning up, running it again finds the manifest and only cleans up."""
    if not partial and finished_manifest(dest, provenance.get("dataset_job")):
        _clean_up(dest, spec)  # a crash came after the manifest: only the clean-up is left
        return _result_of(dest, spec)
    records = [read_shard_record(dest, s) for s in range(spec.shard_count)]
    missing = [s for s, r in enumerate(records) if r is None]
    if missing and not partial:
        raise IncompleteJobError(f"shards without a record: {missing[:10]}")
    records_ = [r for r in records if r is not None]
    entries = [e for r in records_ for e in r.entries]
    images = [rec for e in entries for rec in (*e.samples, *([e.record] if e.record else []))]
    expected = sum(len(r.requested) for r in records_) if partial else spec.count
    if len(images) != expected or len({r.file_name for r in images}) != expected:
        raise IncompleteJobError(
            f"{len(images)} images written ({len({r.file_name for r in images})} distinct), "
            f"{spec.count} requested"
        )
    requested = np.asarray([a for r in records_ for a in r.requested], float)
    extra: list[tuple[str, bytes]] = []
    if spec.format in ("imagefolder", "classfolders"):
        extra.append((METADATA_NAME, encode_csv(images)))
    # requested angles by stored name, in image order (a writer may group files by split, so the
    # records' order is not the images' order)
    stored = {Path(rec.file_name).stem: rec.file_name for rec in images}
    log = "".join(
        json.dumps({"file_name": stored[name], "requested_na_left": a[0], "requested_na_right": a[1]}) + "\n"
        for r in records_
        for name, a in zip(r.names, r.requested, strict=True)
    )
    extra.append((GENERATION_LOG, log.encode()))
    for rel, data in extra:
        dest.put(rel, data)
    provenance = {
        **provenance,
        "fidelity": None,
        "rejected": sum(r.rejected for r in records_),
        "out_of_tolerance": sum(r.out_of_tolerance for r in records_),
        "complete": not partial,
    }
    if all(r.measured is not None for r in records_) and records_:
        measured = np.asarray([a for r in records_ for a in (r.measured or [])], float)
        fid = asdict(Fidelity.of(requested, measured))
        provenance["fidelity"] = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fid.items()
        }
    manifest = Manifest(spec.format, [*entries, *(bytes_entry(rel, data) for rel, data in extra)], provenance)
    _put_manifest(dest, manifest)
    _clean_up(dest, spec)
    return _result_of(dest, spec, manifest)


JOB_MARKER = f"{SHARDS_DIR}/job.json"  # claims the destination for one job from its creation on


def finished_manifest(dest: Destination, job_id: str | None) -> bool:
    """Whether ``dest`` holds the complete manifest of job ``job_id`` (finalising already happened)."""
    data = dest.get(MANIFEST_NAME)
    if data is None:
        return False
    try:
        prov = json.loads(data).get("provenance") or {}
    except ValueError:
        return False
    return bool(prov.get("complete")) and (job_id is None or prov.get("dataset_job") == job_id)


def _clean_up(dest: Destination, spec: JobSpec) -> None:
    for s in range(spec.shard_count):
        dest.remove(shard_record_path(s))
    dest.remove(JOB_MARKER)
    dest.sweep_temp_files()


def _put_manifest(dest: Destination, manifest: Manifest) -> None:
    dest.put(MANIFEST_NAME, (json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False) + "\n").encode())


def _read_manifest(dest: Destination) -> Manifest:
    data = dest.get(MANIFEST_NAME)
    if data is None:
        raise IncompleteJobError(f"{dest.uri_of(MANIFEST_NAME)} does not exist")
    return Manifest.from_dict(json.loads(data), dest.uri_of(MANIFEST_NAME))


def _result_of(dest: Destination, spec: JobSpec, manifest: Manifest | None = None) -> FinalResult:
    manifest = manifest or _read_manifest(dest)
    p = manifest.provenance
    fid = p.get("fidelity")
    fid = {k: (math.nan if v is None else v) for k, v in fid.items()} if fid else None  # JSON null = NaN
    return FinalResult(
        manifest,
        Fidelity(**fid) if fid else None,
        int(p.get("rejected", 0)),
        int(p.get("out_of_tolerance", 0)),
    )


def attach_file(dest: Destination, rel: str, data: bytes) -> None:
    """Add a file to a finished data set and list it in the manifest (e.g. the score report)."""
    dest.put(rel, data)
    manifest = _read_manifest(dest)
    manifest.files = [e for e in manifest.files if e.path != rel] + [bytes_entry(rel, data)]
    _put_manifest(dest, manifest)


__all__ = [
    "GENERATION_LOG",
    "SHARDS_DIR",
    "Fidelity",
    "FinalResult",
    "IncompleteJobError",
    "KeptImage",
    "RejectedAttempt",
    "ShardRecord",
    "JOB_MARKER",
    "attach_file",
    "finalize",
    "finished_manifest",
    "read_shard_record",
    "shard_record_path",
    "write_shard",
]
