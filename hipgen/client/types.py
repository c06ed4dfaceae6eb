"""Typed results at the client boundary.

Plain frozen dataclasses with enums as short strings (``"SUCCEEDED"``, ``"BIG"``, ``"LCM"``), units in
the field names, and the response proto kept as ``raw`` — so the common fields need no protobuf
knowledge and nothing the server sent is lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from hipgen.api.v1 import angle_pb2, common_pb2, dataset_pb2, generate_pb2, score_pb2

Point = tuple[float, float]

#: States after which a dataset job never changes again.
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


def enum_name(enum: EnumTypeWrapper, value: int, prefix: str) -> str:
    """``DATASET_JOB_STATE_RUNNING`` -> ``"RUNNING"``; a value newer than these stubs -> its number."""
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def _point(p: common_pb2.Point) -> Point:
    return (p.x, p.y)


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, name)
    return ts.ToDatetime(tzinfo=UTC)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _hip_class(value: int) -> str:
    return enum_name(common_pb2.HipClass, value, "HIP_CLASS_")


def _sampler(value: int) -> str:
    return enum_name(generate_pb2.Sampler, value, "SAMPLER_")


# --- AngleService ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AngleResult:
    """One measured radiograph (AngleService.PredictAngle). Keypoints are (x, y) pixels of the input
    image; "left"/"right" are the patient's sides; classes are ``"BIG"``/``"SMALL"``."""

    na_left_deg: float
    na_right_deg: float
    class_left: str
    class_right: str
    image_class: str
    grade_left: str
    grade_right: str
    probability_big_left: float
    probability_big_right: float
    left_head: Point
    right_head: Point
    left_rim: Point
    right_rim: Point
    left_radius_px: float
    right_radius_px: float
    left_radius_mm: float | None
    right_radius_mm: float | None
    image_width: int
    image_height: int
    model_name: str
    model_version: str
    overlay_png: bytes | None
    synthetic: bool
    raw: angle_pb2.PredictAngleResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, r: angle_pb2.PredictAngleResponse) -> AngleResult:
        lab = r.label
        return cls(
            na_left_deg=lab.na_left,
            na_right_deg=lab.na_right,
            class_left=_hip_class(lab.class_left),
            class_right=_hip_class(lab.class_right),
            image_class=_hip_class(r.image_class),
            grade_left=lab.grade_left,
            grade_right=lab.grade_right,
            probability_big_left=r.probability_big_left,
            probability_big_right=r.probability_big_right,
            left_head=_point(lab.left_head),
            right_head=_point(lab.right_head),
            left_rim=_point(lab.left_rim),
            right_rim=_point(lab.right_rim),
            left_radius_px=lab.left_radius,
            right_radius_px=lab.right_radius,
            left_radius_mm=r.left_radius_mm if r.HasField("left_radius_mm") else None,
            right_radius_mm=r.right_radius_mm if r.HasField("right_radius_mm") else None,
            image_width=r.image_width,
            image_height=r.image_height,
            model_name=r.model_name,
            model_version=r.model_version,
            overlay_png=r.overlay_png or None,
            synthetic=lab.provenance.synthetic,
            raw=r,
        )


# --- GenerateService ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenerateProgress:
    """A denoising step finished (GenerateService.Generate progress event)."""

    image_index: int
    batch_size: int
    step: int
    total_steps: int
    images_done: int
    images_total: int
    elapsed_s: float
    raw: generate_pb2.GenerateProgress = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: generate_pb2.GenerateProgress) -> GenerateProgress:
        return cls(
            p.image_index, p.batch_size, p.step, p.total_steps, p.images_done, p.images_total,
            p.elapsed_seconds, p,
        )  # fmt: skip


@dataclass(frozen=True)
class GeneratedImage:
    """A generated image: the encoded bytes, what was asked for, and what the angle model measured on
    it (the auto-label; ``None`` angles when the image could not be measured)."""

    index: int
    data: bytes
    encoding: str
    requested_na_left_deg: float
    requested_na_right_deg: float
    na_left_deg: float | None
    na_right_deg: float | None
    seed: int
    sampler: str
    steps: int
    guidance_scale: float
    angle_model_version: str
    raw: generate_pb2.GeneratedImage = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, g: generate_pb2.GeneratedImage) -> GeneratedImage:
        measured = g.HasField("label")
        return cls(
            index=g.index,
            data=g.image.data,
            encoding=enum_name(common_pb2.ImageEncoding, g.image.encoding, "IMAGE_ENCODING_"),
            requested_na_left_deg=g.requested.na_left_deg,
            requested_na_right_deg=g.requested.na_right_deg,
            na_left_deg=g.label.na_left if measured else None,
            na_right_deg=g.label.na_right if measured else None,
            seed=g.seed,
            sampler=_sampler(g.sampler),
            steps=g.steps,
            guidance_scale=g.guidance_scale,
            angle_model_version=g.angle_model_version,
            raw=g,
        )


@dataclass(frozen=True)
class LabeledImage:
    """An image GenerateLabeled kept, with the attempts it took and its measured-minus-requested error."""

    image: GeneratedImage
    attempts: int
    within_tolerance: bool
    error_left_deg: float
    error_right_deg: float

    @classmethod
    def from_proto(cls, li: dataset_pb2.LabeledImage) -> LabeledImage:
        return cls(
            GeneratedImage.from_proto(li.image),
            li.attempts,
            li.within_tolerance,
            li.error_left_deg,
            li.error_right_deg,
        )


@dataclass(frozen=True)
class LabeledResult:
    """DatasetService.GenerateLabeled: one kept image per requested image, and the rejected attempts."""

    images: list[LabeledImage]
    rejected: list[GeneratedImage]
    raw: dataset_pb2.GenerateLabeledResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, r: dataset_pb2.GenerateLabeledResponse) -> LabeledResult:
        return cls(
            [LabeledImage.from_proto(i) for i in r.images],
            [GeneratedImage.from_proto(g) for g in r.rejected],
            r,
        )


# --- ScoreService ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """One metric value (unitless), its standard error and its noise baseline when computed."""

    name: str
    value: float
    standard_error: float
    noise_baseline: float | None
    sample_count: int


@dataclass(frozen=True)
class AngleFidelity:
    """Requested vs measured Norberg angle on one side (degrees, except r and R²)."""

    pearson_r: float
    r_squared: float
    mean_absolute_error_deg: float
    rmse_deg: float
    bias_deg: float
    count: int


@dataclass(frozen=True)
class ScoreReport:
    """ScoreService.ScoreSets: metrics by name, in the server's order."""

    metrics: dict[str, Metric]
    feature_backbone: str
    angle_fidelity_left: AngleFidelity | None
    angle_fidelity_right: AngleFidelity | None
    reference_count: int
    candidate_count: int
    notes: list[str]
    raw: score_pb2.ScoreSetsResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, r: score_pb2.ScoreSetsResponse) -> ScoreReport:
        def fidelity(name: str) -> AngleFidelity | None:
            if not r.HasField(name):
                return None
            f = getattr(r, name)
            return AngleFidelity(
                f.pearson_r, f.r_squared, f.mean_absolute_error_deg, f.rmse_deg, f.bias_deg, f.count
            )

        metrics = {
            m.name: Metric(
                m.name,
                m.value,
                m.standard_error,
                m.noise_baseline if m.HasField("noise_baseline") else None,
                m.sample_count,
            )
            for m in r.metrics
        }
        return cls(
            metrics,
            r.feature_backbone,
            fidelity("angle_fidelity_left"),
            fidelity("angle_fidelity_right"),
            r.reference_count,
            r.candidate_count,
            list(r.notes),
            r,
        )


# --- DatasetService -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobProgress:
    """How far a dataset job is (counts; ``bytes_written`` in bytes)."""

    images_done: int
    images_total: int
    images_rejected: int
    images_out_of_tolerance: int
    shards_done: int
    shards_total: int
    bytes_written: int


@dataclass(frozen=True)
class DatasetFidelity:
    """Requested vs measured angles over a finished data set; ``pearson_r`` is ``None`` when undefined."""

    angles: int
    mae_deg: float
    pearson_r: float | None


@dataclass(frozen=True)
class DatasetJob:
    """A dataset job as the gateway reports it; ``state`` is one of QUEUED, RUNNING, SUCCEEDED, FAILED,
    CANCELLING, CANCELLED. ``error_code``/``error_message`` are set only in FAILED."""

    job_id: str
    state: str
    progress: JobProgress
    output_uri: str
    format: str
    count: int
    display_name: str
    manifest_uri: str
    score_report_uri: str
    fidelity: DatasetFidelity | None
    error_code: str | None
    error_message: str
    create_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    kubernetes_job_name: str
    raw: dataset_pb2.DatasetJob = field(repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the job reached a final state (it will not change again)."""
        return self.state in FINAL_STATES

    @classmethod
    def from_proto(cls, j: dataset_pb2.DatasetJob) -> DatasetJob:
        p = j.progress
        failed = j.HasField("error") and j.error.code != 0
        fid = j.fidelity if j.HasField("fidelity") else None
        return cls(
            job_id=j.job_id,
            state=enum_name(dataset_pb2.DatasetJobState, j.state, "DATASET_JOB_STATE_"),
            progress=JobProgress(
                p.images_done,
                p.images_total,
                p.images_rejected,
                p.images_out_of_tolerance,
                p.shards_done,
                p.shards_total,
                p.bytes_written,
            ),
            output_uri=j.spec.output_uri,
            format=enum_name(dataset_pb2.DatasetFormat, j.spec.format, "DATASET_FORMAT_").lower(),
            count=j.spec.count,
            display_name=j.spec.display_name,
            manifest_uri=j.manifest_uri,
            score_report_uri=j.score_report_uri,
            fidelity=DatasetFidelity(fid.angles, fid.mae_deg, _finite(fid.pearson_r)) if fid else None,
            error_code=_code_name(j.error.code) if failed else None,
            error_message=j.error.message if failed else "",
            create_time=_time(j, "create_time"),
            start_time=_time(j, "start_time"),
            end_time=_time(j, "end_time"),
            kubernetes_job_name=j.kubernetes_job_name,
            raw=j,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601, the full spec under ``"spec"``, no NaN)."""
        out: dict[str, Any] = {
            "job_id": self.job_id,
            "state": self.state,
            "display_name": self.display_name,
            "output_uri": self.output_uri,
            "format": self.format,
            "count": self.count,
            "progress": self.progress.__dict__.copy(),
            "manifest_uri": self.manifest_uri,
            "score_report_uri": self.score_report_uri,
            "fidelity": self.fidelity.__dict__.copy() if self.fidelity else None,
            "error": {"code": self.error_code, "message": self.error_message} if self.error_code else None,
            "kubernetes_job_name": self.kubernetes_job_name,
        }
        for name in ("create_time", "start_time", "end_time"):
            t = getattr(self, name)
            out[name] = t.isoformat() if t else None
        spec = json_format.MessageToDict(self.raw.spec, preserving_proto_field_name=True)
        out["spec"] = spec
        return out


def _code_name(code: int) -> str:
    for c in grpc.StatusCode:
        if c.value[0] == code:
            return c.name
    return str(code)


__all__ = [
    "FINAL_STATES",
    "AngleFidelity",
    "AngleResult",
    "DatasetFidelity",
    "DatasetJob",
    "GenerateProgress",
    "GeneratedImage",
    "JobProgress",
    "LabeledImage",
    "LabeledResult",
    "Metric",
    "Point",
    "ScoreReport",
    "enum_name",
]
