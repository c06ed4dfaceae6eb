"""Request builders shared by the sync and async clients: Python values in, ``hipgen.v1`` messages out.

Only structural mistakes are caught here (an unknown sampler name, two angle distributions at once, a
negative count), as :class:`~hipgen.errors.FieldError` naming the request field, before anything is
sent. Every value check stays with the server: it is the one place that knows its limits.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hipgen.api.v1 import angle_pb2, common_pb2, dataset_pb2, generate_pb2, score_pb2
from hipgen.errors import FieldError

SAMPLERS: Mapping[str, int] = {
    "ddpm": generate_pb2.SAMPLER_DDPM,
    "ddim": generate_pb2.SAMPLER_DDIM,
    "dpm_solver": generate_pb2.SAMPLER_DPM_SOLVER,
    "lcm": generate_pb2.SAMPLER_LCM,
}
FORMATS: Mapping[str, int] = {
    "imagefolder": dataset_pb2.DATASET_FORMAT_IMAGEFOLDER,
    "classfolders": dataset_pb2.DATASET_FORMAT_CLASSFOLDERS,
    "webdataset": dataset_pb2.DATASET_FORMAT_WEBDATASET,
    "dicom": dataset_pb2.DATASET_FORMAT_DICOM,
}
LABELS: Mapping[str, int] = {
    "measured": dataset_pb2.LABEL_SOURCE_MEASURED,
    "requested": dataset_pb2.LABEL_SOURCE_REQUESTED,
}
EXECUTORS: Mapping[str, int] = {
    "local": dataset_pb2.DATASET_EXECUTOR_LOCAL,
    "kubernetes": dataset_pb2.DATASET_EXECUTOR_KUBERNETES,
}
STATES: Mapping[str, int] = {
    name.removeprefix("DATASET_JOB_STATE_").lower(): value
    for name, value in dataset_pb2.DatasetJobState.items()
    if value
}
ENCODINGS: Mapping[str, int] = {
    name.removeprefix("IMAGE_ENCODING_").lower(): value
    for name, value in common_pb2.ImageEncoding.items()
    if value
}

Condition = tuple[float, float] | common_pb2.NaCondition
ImageInput = bytes | bytearray | memoryview | str | os.PathLike[str] | common_pb2.Image


def choice(table: Mapping[str, int], value: str | int | None, field: str) -> int:
    """The enum number of ``value``: a name from ``table`` (any case, ``-`` for ``_``), a raw enum
    number, or ``None`` for UNSPECIFIED."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    key = str(value).strip().lower().replace("-", "_")
    if key not in table:
        raise FieldError(field, f"{value!r} is not one of {', '.join(table)}")
    return table[key]


def to_uri(location: str | os.PathLike[str]) -> str:
    """A data-set location as the services take it: ``s3://`` and absolute ``file:///`` URIs as they
    are; a plain or ``file://relative`` path as an absolute ``file://`` URI (relative to this process's
    folder — meaningful when the gateway shares this file system)."""
    text = os.fspath(location)
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() != "file":
        return text
    path = rest if sep else text
    return "file://" + os.path.abspath(os.path.expanduser(path))


def _uint(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FieldError(field, f"must be a whole number ≥ 0, got {value!r}")
    return value


def conditions(items: Iterable[Condition]) -> list[common_pb2.NaCondition]:
    """Angle pairs ``(left_deg, right_deg)`` (or ``NaCondition`` messages) as messages."""
    out = []
    for k, item in enumerate(items):
        if isinstance(item, common_pb2.NaCondition):
            out.append(item)
            continue
        try:
            left, right = item
            out.append(common_pb2.NaCondition(na_left_deg=float(left), na_right_deg=float(right)))
        except (TypeError, ValueError):
            raise FieldError(f"conditions[{k}]", f"give (left_deg, right_deg), got {item!r}") from None
    return out


def image_message(
    image: ImageInput,
    *,
    encoding: str | int | None = None,
    width: int = 0,
    height: int = 0,
    pixel_spacing_mm: float = 0.0,
    file_name: str | None = None,
) -> common_pb2.Image:
    """An ``Image`` from bytes, a file path or an ``Image``. PNG, JPEG and DICOM need no ``encoding``
    (the server detects them); raw samples need it and ``width``/``height``. A path sends its file
    name (never the folder: it may name a patient)."""
    if isinstance(image, common_pb2.Image):
        msg = common_pb2.Image()
        msg.CopyFrom(image)
    elif isinstance(image, bytes | bytearray | memoryview):
        msg = common_pb2.Image(data=bytes(image))
    else:
        path = Path(image)
        msg = common_pb2.Image(data=path.read_bytes(), file_name=path.name)
    if encoding is not None:
        msg.encoding = choice(ENCODINGS, encoding, "image.encoding")  # type: ignore[assignment]
    if width or height:
        msg.width, msg.height = _uint("image.width", width), _uint("image.height", height)
    if pixel_spacing_mm:
        msg.pixel_spacing_mm = pixel_spacing_mm
    if file_name is not None:
        msg.file_name = file_name
    return msg


def predict_angle_request(
    image: ImageInput,
    *,
    include_overlay: bool = False,
    grading_scheme: str = "",
    class_threshold_deg: float | None = None,
    model_name: str = "",
    **image_kw: Any,
) -> angle_pb2.PredictAngleRequest:
    req = angle_pb2.PredictAngleRequest(
        image=image_message(image, **image_kw),
        include_overlay=include_overlay,
        grading_scheme=grading_scheme,
        model_name=model_name,
    )
    if class_threshold_deg is not None:
        req.class_threshold_deg = class_threshold_deg
    return req


def generate_request(
    conds: Iterable[Condition],
    *,
    images_per_condition: int = 1,
    seed: int | None = None,
    sampler: str | int | None = None,
    steps: int = 0,
    guidance_scale: float | None = None,
    model_name: str = "",
    image_size: int = 0,
    output_encoding: str | int | None = None,
) -> generate_pb2.GenerateRequest:
    req = generate_pb2.GenerateRequest(
        conditions=conditions(conds),
        images_per_condition=_uint("images_per_condition", images_per_condition),
        sampler=choice(SAMPLERS, sampler, "sampler"),  # type: ignore[arg-type]
        steps=_uint("steps", steps),
        model_name=model_name,
        image_size=_uint("image_size", image_size),
        output_encoding=choice(ENCODINGS, output_encoding, "output_encoding"),  # type: ignore[arg-type]
    )
    if seed is not None:
        req.seed = _uint("seed", seed)
    if guidance_scale is not None:
        req.guidance_scale = guidance_scale
    return req


def image_set(source: str | os.PathLike[str] | Sequence[ImageInput]) -> score_pb2.ImageSet:
    """A scored set: a location (path or URI, see :func:`to_uri`) or a sequence of images sent inline."""
    if isinstance(source, str | os.PathLike):
        return score_pb2.ImageSet(uri=to_uri(source))
    return score_pb2.ImageSet(
        inline_images=score_pb2.InlineImageSet(images=[image_message(i) for i in source])
    )


def angle_distribution(
    *,
    na_range: tuple[float, float] | None = None,
    angles_list: Iterable[Condition] | None = None,
    balanced: tuple[float, float] | tuple[float, float, float] | None = None,
    histogram: tuple[Sequence[float], Sequence[float]] | None = None,
    symmetric: bool = False,
) -> dataset_pb2.AngleDistribution:
    """Exactly one of: ``na_range=(low, high)`` uniform; ``angles_list=[(left, right), ...]`` in order;
    ``balanced=(low, high[, threshold])`` alternating Big/Small; ``histogram=(edges, weights)``."""
    given = [
        n
        for n, v in (
            ("na_range", na_range),
            ("angles_list", angles_list),
            ("balanced", balanced),
            ("histogram", histogram),
        )
        if v is not None
    ]
    if len(given) != 1:
        raise FieldError(
            "spec.angles",
            "give exactly one of na_range, angles_list, balanced, histogram "
            f"(got {', '.join(given) or 'none'})",
        )
    out = dataset_pb2.AngleDistribution(symmetric=symmetric)
    try:
        if na_range is not None:
            low, high = na_range
            out.uniform.low_deg, out.uniform.high_deg = float(low), float(high)
        elif angles_list is not None:
            out.list.conditions.extend(conditions(angles_list))
        elif balanced is not None:
            low, high, *rest = balanced
            out.balanced.low_deg, out.balanced.high_deg = float(low), float(high)
            out.balanced.threshold_deg = float(rest[0]) if rest else 0.0
        elif histogram is not None:
            edges, weights = histogram
            out.histogram.edges_deg.extend(float(e) for e in edges)
            out.histogram.weights.extend(float(w) for w in weights)
    except (TypeError, ValueError) as e:
        raise FieldError(f"spec.angles.{given[0]}", str(e)) from None
    return out


def dataset_spec(
    output_uri: str | os.PathLike[str],
    count: int,
    *,
    format: str | int = "imagefolder",
    na_range: tuple[float, float] | None = None,
    angles_list: Iterable[Condition] | None = None,
    balanced: tuple[float, float] | tuple[float, float, float] | None = None,
    histogram: tuple[Sequence[float], Sequence[float]] | None = None,
    symmetric: bool = False,
    seed: int = 0,
    sampler: str | int | None = None,
    steps: int = 0,
    guidance_scale: float | None = None,
    model_name: str = "",
    image_size: int = 0,
    test_fraction: float = 0.0,
    display_name: str = "",
    labels: str | int = "measured",
    tolerance_deg: float | None = None,
    max_regenerations: int = 0,
    reference_uri: str | os.PathLike[str] = "",
    images_per_shard: int = 0,
    executor: str | int | None = None,
) -> dataset_pb2.DatasetJobSpec:
    """A ``DatasetJobSpec`` from keyword values (names as in the proto; angles as in
    :func:`angle_distribution`; paths become ``file://`` URIs as in :func:`to_uri`)."""
    spec = dataset_pb2.DatasetJobSpec(
        output_uri=to_uri(output_uri),
        format=choice(FORMATS, format, "spec.format"),  # type: ignore[arg-type]
        count=_uint("spec.count", count),
        angles=angle_distribution(
            na_range=na_range,
            angles_list=angles_list,
            balanced=balanced,
            histogram=histogram,
            symmetric=symmetric,
        ),
        seed=_uint("spec.seed", seed),
        sampler=choice(SAMPLERS, sampler, "spec.sampler"),  # type: ignore[arg-type]
        steps=_uint("spec.steps", steps),
        model_name=model_name,
        image_size=_uint("spec.image_size", image_size),
        test_fraction=test_fraction,
        display_name=display_name,
        labels=choice(LABELS, labels, "spec.labels"),  # type: ignore[arg-type]
        max_regenerations=_uint("spec.max_regenerations", max_regenerations),
        reference_uri=to_uri(reference_uri) if os.fspath(reference_uri) else "",
        images_per_shard=_uint("spec.images_per_shard", images_per_shard),
        executor=choice(EXECUTORS, executor, "spec.executor"),  # type: ignore[arg-type]
    )
    if guidance_scale is not None:
        spec.guidance_scale = guidance_scale
    if tolerance_deg is not None:
        spec.tolerance_deg = tolerance_deg
    return spec


__all__ = [
    "ENCODINGS",
    "EXECUTORS",
    "FORMATS",
    "LABELS",
    "SAMPLERS",
    "STATES",
    "Condition",
    "ImageInput",
    "angle_distribution",
    "choice",
    "conditions",
    "dataset_spec",
    "generate_request",
    "image_message",
    "image_set",
    "predict_angle_request",
    "to_uri",
]
