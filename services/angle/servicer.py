"""AngleService servicer: decode the image, measure it with :mod:`hipgen.angle`, encode the label.

Thin by design: the measurement is :class:`hipgen.angle.measure.AngleMeasurer` (the same code the CLI
and the training's evaluation run), the label is :class:`hipgen.data.record.LabelRecord`, the overlay
is :mod:`hipgen.angle.overlay`. What lives here is the translation between protos and those calls:

- **Input.** PNG, JPEG and DICOM bytes (declared, or detected by their signature when the encoding is
  UNSPECIFIED; TIFF and BMP, which have no encoding of their own, are detected the same way), and raw
  little-endian samples: RAW_FLOAT32 must hold exactly ``width * height`` finite values in [0, 1] —
  values outside are *refused*, not clipped, because a client sending 0–255 or Hounsfield-like floats
  has a bug that clipping would hide; RAW_UINT16 samples map 0–65535 to [0, 1] (the measurer windows
  intensities itself, so 12-bit data is fine). Every image is checked against the pixel cap
  (``Settings.max_image_pixels``) from its header or its declared size *before* any pixel is decoded,
  and must be at least ``MIN_SIDE`` pixels on each side.
- **Errors.** Bad input answers INVALID_ARGUMENT with ``google.rpc.BadRequest`` field violations naming
  the request field (``image.data``, ``image.width``, ``grading_scheme``, ``class_threshold_deg``,
  ``model_name``, …). A model that is not deployed answers FAILED_PRECONDITION when it is the server's
  default (a deployment fault: retrying does not help) and INVALID_ARGUMENT naming ``model_name`` when
  the caller asked for it; so does a model that is not an angle keypoint model
  (:class:`hipgen.angle.measure.NotAnAngleModelError`). A model that is deployed but cannot be loaded (a
  corrupt ``model.onnx``, a malformed ``MANIFEST.json``) answers FAILED_PRECONDITION and is logged; the
  server starts and answers health checks regardless. Anything unexpected answers INTERNAL with a
  generic message — for that image alone, not its whole batch — and is logged here, without pixel data.
- **Streams.** ``StreamPredictAngle`` answers every request in request order. Requests are read on a
  helper thread, and each batch takes every request that has already arrived (up to ``batch_size``,
  and at most ``batch_pixels`` decoded pixels per model call) — a client that sends one image and
  waits for its answer is never kept waiting for a full batch. A bad item answers with its own
  ``google.rpc.Status`` and the stream goes on; a cancelled stream stops between batches.
- **Provenance.** Copied from hipgen's synthetic marker by :func:`hipgen.data.images.synthetic_provenance`
  (the ``hipgen:*`` PNG text chunks or the DICOM private block; the CLI reads it the same way).

Metrics (module level, so several servers in one process share them): ``hipgen_angle_inference_seconds``
(histogram of one measure call — locator plus keypoint passes over a batch — by model) and
``hipgen_angle_images_measured_total`` (counter by model).
"""

from __future__ import annotations

import io
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from grpc_status import rpc_status
from prometheus_client import Counter, Histogram

from hipgen import anatomy
from hipgen.angle.measure import (
    DEFAULT_ANGLE_MODEL,
    MIN_SIDE,
    AngleMeasurer,
    Measurement,
    NotAnAngleModelError,
    measurer_from_backend,
)
from hipgen.angle.overlay import overlay_png
from hipgen.api.v1 import angle_pb2, angle_pb2_grpc, common_pb2
from hipgen.data.images import (
    Radiograph,
    decode_image_bytes,
    is_dicom_bytes,
    max_pixels,
    synthetic_provenance,
)
from hipgen.data.record import LabelRecord
from hipgen.errors import InputError
from hipgen.inference.backend import Backend, BackendUnavailableError, ModelNotFoundError
from hipgen.settings import Settings
from services.errors import MODEL_NAME, FieldViolation, RequestError

log = logging.getLogger("services.angle")

BATCH_SIZE = 16  # most requests one measure call takes from a stream
BATCH_PIXELS = 32_000_000  # most decoded pixels (128 MB of float32) one measure call holds
_HIP_CLASS = {"big": common_pb2.HIP_CLASS_BIG, "small": common_pb2.HIP_CLASS_SMALL}
_ENC = common_pb2.ImageEncoding
_RAW_BYTES = {_ENC.IMAGE_ENCODING_RAW_FLOAT32: 4, _ENC.IMAGE_ENCODING_RAW_UINT16: 2}
_DECLARED = {
    _ENC.IMAGE_ENCODING_PNG: "png",
    _ENC.IMAGE_ENCODING_JPEG: "jpeg",
    _ENC.IMAGE_ENCODING_DICOM: "dicom",
}
_FLOAT_TOLERANCE = 1e-6  # float32 rounding of values computed as exactly 0 or 1
INTERNAL_MESSAGE = "internal error while measuring the image (the server log has the details)"

INFERENCE_SECONDS = Histogram(
    "hipgen_angle_inference_seconds",
    "Seconds of one angle-model measure call (locator and keypoint passes over a batch of images).",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
IMAGES_MEASURED = Counter("hipgen_angle_images_measured", "Images measured by AngleService.", ["model"])


# --- errors -----------------------------------------------------------------------------------------
class AngleRequestError(RequestError):
    """Why one AngleService request gets no measurement."""

    @classmethod
    def internal(cls) -> AngleRequestError:
        return cls(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


# --- request options --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AngleOptions:
    """What a request asks for besides its image, with the defaults filled in."""

    model: str
    scheme: str = anatomy.DEFAULT_SCHEME
    threshold_deg: float = anatomy.DEFAULT_THRESHOLD_DEG
    include_overlay: bool = False


def parse_options(
    request: angle_pb2.PredictAngleRequest, default_model: str
) -> tuple[AngleOptions, list[FieldViolation]]:
    """The request's options and the violations among them (all of them, so a caller fixes them at once)."""
    bad: list[FieldViolation] = []
    scheme = request.grading_scheme.strip().lower() or anatomy.DEFAULT_SCHEME
    if scheme not in anatomy.GRADING_SCHEMES:
        bad.append(
            FieldViolation(
                "grading_scheme",
                f"unknown scheme {request.grading_scheme[:40]!r}; "
                f"choose one of {sorted(anatomy.GRADING_SCHEMES)}",
            )
        )
    threshold = anatomy.DEFAULT_THRESHOLD_DEG
    if request.HasField("class_threshold_deg"):
        threshold = request.class_threshold_deg
        if not (math.isfinite(threshold) and 0.0 < threshold < 180.0):
            bad.append(
                FieldViolation(
                    "class_threshold_deg", f"must be a finite angle in (0, 180) degrees, got {threshold}"
                )
            )
    model = request.model_name.strip() or default_model
    if not MODEL_NAME.fullmatch(model):
        bad.append(
            FieldViolation(
                "model_name", f"{request.model_name[:40]!r} is not a model name (letters, digits, _ . -)"
            )
        )
    return AngleOptions(model, scheme, threshold, request.include_overlay), bad


# --- images -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodedImage:
    """A request's image, ready to measure."""

    pixels: np.ndarray  # float32 (H, W) in [0, 1]
    pixel_spacing_mm: float | None  # isotropic mm per pixel, when known (request first, then DICOM)
    provenance: dict[str, Any] = field(default_factory=dict)  # synthetic, generator, model_version, seed


def image_violations(image: common_pb2.Image, pixel_cap: int) -> list[FieldViolation]:
    """Everything wrong with an image that its fields tell without decoding a pixel."""
    bad: list[FieldViolation] = []
    spacing = image.pixel_spacing_mm
    if not (math.isfinite(spacing) and spacing >= 0.0):
        bad.append(
            FieldViolation(
                "image.pixel_spacing_mm", f"must be a finite size ≥ 0 mm (0: unknown), got {spacing}"
            )
        )
    if image.encoding not in _ENC.values():
        bad.append(FieldViolation("image.encoding", f"unknown encoding {image.encoding}"))
    elif image.encoding in _RAW_BYTES:
        bad += _raw_violations(image, pixel_cap)
    elif not image.data:
        bad.append(FieldViolation("image.data", "is empty"))
    return bad


def _raw_violations(image: common_pb2.Image, pixel_cap: int) -> list[FieldViolation]:
    name = _ENC.Name(image.encoding).removeprefix("IMAGE_ENCODING_")
    w, h = image.width, image.height
    bad = [
        FieldViolation(f"image.{k}", f"is required for {name} (pixels, at least {MIN_SIDE})")
        for k, v in (("width", w), ("height", h))
        if v == 0
    ]
    bad += [
        FieldViolation(f"image.{k}", f"{v} pixels is too small to measure (at least {MIN_SIDE})")
        for k, v in (("width", w), ("height", h))
        if 0 < v < MIN_SIDE
    ]
    if bad:
        return bad
    if w * h > pixel_cap:
        why = f"{w}x{h} = {w * h} pixels exceeds the cap of {pixel_cap}"
        return [FieldViolation("image.width", why), FieldViolation("image.height", why)]
    need = w * h * _RAW_BYTES[image.encoding]
    if len(image.data) != need:
        return [
            FieldViolation(
                "image.data",
                f"holds {len(image.data)} bytes; a {w}x{h} {name} image needs exactly {need} "
                f"(width * height * {_RAW_BYTES[image.encoding]})",
            )
        ]
    return []


def decode_image(image: common_pb2.Image, pixel_cap: int) -> DecodedImage:
    """Decode and check one request image; raises :class:`AngleRequestError` (INVALID_ARGUMENT)."""
    bad = image_violations(image, pixel_cap)
    if bad:
        raise AngleRequestError.invalid(bad)
    return _decode_checked(image, pixel_cap)


def _decode_checked(image: common_pb2.Image, pixel_cap: int) -> DecodedImage:
    """:func:`decode_image` of an image whose :func:`image_violations` are known to be none."""
    if image.encoding in _RAW_BYTES:
        pixels, spacing, provenance = _decode_raw(image), None, {}
    else:
        rad = _decode_encoded(image, pixel_cap)
        marker = synthetic_provenance(rad)
        pixels, spacing = rad.pixels, _file_spacing(rad)
        provenance = marker.as_fields() if marker is not None else {}
    h, w = pixels.shape
    if min(h, w) < MIN_SIDE:
        raise AngleRequestError.invalid(
            [FieldViolation("image.data", f"image is {w}x{h} pixels; at least {MIN_SIDE} on each side")]
        )
    if image.pixel_spacing_mm > 0:
        spacing = image.pixel_spacing_mm
    return DecodedImage(np.ascontiguousarray(pixels, np.float32), spacing, provenance)


def _decode_raw(image: common_pb2.Image) -> np.ndarray:
    shape = (image.height, image.width)
    if image.encoding == _ENC.IMAGE_ENCODING_RAW_UINT16:
        return (np.frombuffer(image.data, "<u2").reshape(shape) / np.float32(65535.0)).astype(np.float32)
    a = np.frombuffer(image.data, "<f4").reshape(shape)
    finite = np.isfinite(a)
    if not finite.all():
        n = int(a.size - np.count_nonzero(finite))
        raise AngleRequestError.invalid(
            [FieldViolation("image.data", f"{n} float32 samples are NaN or infinite")]
        )
    lo, hi = float(a.min()), float(a.max())
    if lo < -_FLOAT_TOLERANCE or hi > 1.0 + _FLOAT_TOLERANCE:
        raise AngleRequestError.invalid(
            [
                FieldViolation(
                    "image.data", f"RAW_FLOAT32 samples must lie in [0, 1]; they span {lo:.6g} to {hi:.6g}"
                )
            ]
        )
    return np.clip(a, 0.0, 1.0).astype(np.float32)


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if is_dicom_bytes(data[:132]):
        return "dicom"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if data.startswith(b"BM"):
        return "bmp"
    return None


def _decode_encoded(image: common_pb2.Image, pixel_cap: int) -> Radiograph:
    """PNG/JPEG/DICOM (or detected) bytes to a Radiograph; the decoders check the pixel cap from the
    header before decoding, so a decompression bomb is refused unread."""
    declared, found = _DECLARED.get(image.encoding), _sniff(image.data)
    if declared and found and found != declared:
        raise AngleRequestError.invalid(
            [
                FieldViolation(
                    "image.encoding",
                    f"{_ENC.Name(image.encoding)} declared but the bytes are {found.upper()}",
                )
            ]
        )
    try:
        if declared == "dicom" and found is None:  # a DICOM stream without the Part-10 preamble
            from hipgen.data.dicom import read_dicom

            return read_dicom(io.BytesIO(image.data), source="image.data", pixel_cap=pixel_cap)
        if declared and found is None:
            raise InputError("image.data", f"not a {declared.upper()} file (its signature is missing)")
        return decode_image_bytes(image.data, source="image.data", pixel_cap=pixel_cap)
    except InputError as e:
        raise AngleRequestError.invalid([FieldViolation("image.data", e.reason)]) from None
    except Exception as e:  # a decoder failing on bytes it was never meant to see: still the input's fault
        log.warning("image decoder failed", extra={"error_type": type(e).__name__})
        raise AngleRequestError.invalid(
            [FieldViolation("image.data", "image data could not be decoded")]
        ) from None


def _file_spacing(rad: Radiograph) -> float | None:
    """Isotropic mm per pixel from the file (DICOM PixelSpacing); the geometric mean when anisotropic."""
    if rad.pixel_spacing_mm is None:
        return None
    r, c = (float(v) for v in rad.pixel_spacing_mm)
    return math.sqrt(r * c) if math.isfinite(r * c) and r > 0 and c > 0 else None


# --- responses --------------------------------------------------------------------------------------
def _point(x: float, y: float) -> common_pb2.Point:
    return common_pb2.Point(x=x, y=y)


def label_to_proto(rec: LabelRecord) -> common_pb2.HipLabel:
    """The one label record (DESIGN §1) as a ``HipLabel``, field for field."""
    label = common_pb2.HipLabel(
        file_name=rec.file_name,
        text=rec.text,
        na_left=rec.na_left,
        na_right=rec.na_right,
        left_head=_point(rec.left_head_x, rec.left_head_y),
        right_head=_point(rec.right_head_x, rec.right_head_y),
        left_rim=_point(rec.left_rim_x, rec.left_rim_y),
        right_rim=_point(rec.right_rim_x, rec.right_rim_y),
        left_radius=rec.left_radius,
        right_radius=rec.right_radius,
        class_left=_HIP_CLASS[rec.class_left],
        class_right=_HIP_CLASS[rec.class_right],
        grade_left=rec.grade_left,
        grade_right=rec.grade_right,
    )
    if rec.synthetic:
        label.provenance.synthetic = True
        label.provenance.generator = rec.generator or ""
        label.provenance.model_version = rec.model_version or ""
        if rec.seed is not None:
            label.provenance.seed = rec.seed
    return label


def label_from_proto(label: common_pb2.HipLabel) -> LabelRecord:
    """The inverse of :func:`label_to_proto` (the gateway writes the labels GenerateService measured)."""
    classes = {v: k for k, v in _HIP_CLASS.items()}
    prov = label.provenance if label.HasField("provenance") else None
    return LabelRecord(
        file_name=label.file_name,
        text=label.text,
        na_left=label.na_left,
        na_right=label.na_right,
        left_head_x=label.left_head.x,
        left_head_y=label.left_head.y,
        right_head_x=label.right_head.x,
        right_head_y=label.right_head.y,
        left_rim_x=label.left_rim.x,
        left_rim_y=label.left_rim.y,
        right_rim_x=label.right_rim.x,
        right_rim_y=label.right_rim.y,
        left_radius=label.left_radius,
        right_radius=label.right_radius,
        class_left=classes.get(label.class_left, ""),
        class_right=classes.get(label.class_right, ""),
        grade_left=label.grade_left,
        grade_right=label.grade_right,
        synthetic=prov.synthetic if prov else None,
        generator=(prov.generator or None) if prov else None,
        model_version=(prov.model_version or None) if prov else None,
        seed=prov.seed if prov and prov.HasField("seed") else None,
    )


def _record(m: Measurement, image: DecodedImage, options: AngleOptions, file_name: str) -> LabelRecord:
    """The label of one measurement; ValueError when the model's points make no measurable pair of hips
    (coinciding or non-finite points)."""
    rec = LabelRecord.from_keypoints(
        file_name, m.keypoints, threshold=options.threshold_deg, scheme=options.scheme, **image.provenance
    )
    values = [getattr(rec, k) for k in ("na_left", "na_right", "left_radius", "right_radius")]
    values += [*m.keypoints.left_head, *m.keypoints.right_head, *m.keypoints.left_rim, *m.keypoints.right_rim]
    values += [m.prob_big_left, m.prob_big_right]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("the model returned non-finite keypoints")
    return rec


def _unmeasurable(err: Exception) -> AngleRequestError:
    return AngleRequestError.invalid(
        [FieldViolation("image.data", f"no measurable pair of hips found in this image ({err})")]
    )


@dataclass(frozen=True)
class _Prepared:
    """A request whose options and image passed every check."""

    options: AngleOptions
    image: DecodedImage
    file_name: str


@dataclass(frozen=True)
class _Model:
    measurer: AngleMeasurer
    version: str


Outcome = angle_pb2.PredictAngleResponse | AngleRequestError


# --- the servicer -----------------------------------------------------------------------------------
class AngleServicer(angle_pb2_grpc.AngleServiceServicer):
    """AngleService on any :class:`hipgen.inference.backend.Backend`.

    Args:
        backend: runs the locator and keypoint models (``OrtBackend`` in-process by default).
        default_model: the keypoint model measured when a request names none; its manifest names the
            locator.
        settings: the pixel cap comes from here (``max_image_pixels``); ``None`` reads the settings.
        batch_size, batch_pixels: most requests, and most decoded pixels, one measure call takes.
    """

    def __init__(
        self,
        backend: Backend,
        default_model: str = DEFAULT_ANGLE_MODEL,
        settings: Settings | None = None,
        *,
        batch_size: int = BATCH_SIZE,
        batch_pixels: int = BATCH_PIXELS,
    ) -> None:
        if batch_size < 1 or batch_pixels < 1:
            raise ValueError("batch_size and batch_pixels must be at least 1")
        self.backend = backend
        self.default_model = default_model
        self.pixel_cap = settings.max_image_pixels if settings is not None else max_pixels()
        self.batch_size = batch_size
        self.batch_pixels = batch_pixels
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()

    # -- models ------------------------------------------------------------------------------------
    def warm_up(self) -> bool:
        """Load the default model and its locator now (not on the first request); log which, or why
        not. Returns whether the default model is ready; the server starts either way."""
        try:
            model = self._model(self.default_model)
        except AngleRequestError as e:
            log.warning("angle model not ready", extra={"model": self.default_model, "reason": e.message})
            return False
        except Exception:  # _model converts every loading failure; never let one stop the server
            log.exception("angle model not ready", extra={"model": self.default_model})
            return False
        log.info("angle model ready", extra={"model": self.default_model, "version": model.version})
        return True

    def _model(self, name: str) -> _Model:
        """The measurer of keypoint model ``name`` (cached); AngleRequestError when it cannot serve."""
        with self._lock:
            cached = self._models.get(name)
        if cached is not None:
            return cached
        try:
            info = self.backend.model_info(name)
        except ModelNotFoundError:
            raise self._not_deployed(name, f"angle model {name!r} is not deployed on this server") from None
        except Exception:  # a corrupt model.onnx (ONNX Runtime's own errors), a malformed MANIFEST.json
            raise self._unloadable(name) from None
        try:
            measurer = measurer_from_backend(self.backend, name)  # loads the locator too
        except NotAnAngleModelError as e:
            raise self._not_deployed(name, str(e)) from None
        except ModelNotFoundError:
            locator = (info.manifest.get("pipeline") or {}).get("locator", "angle_locator")
            raise AngleRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the locator model {str(locator)[:128]!r} that angle model {name!r} needs "
                "is not deployed on this server",
            ) from None
        except Exception:  # a corrupt locator, a manifest whose pipeline settings are not numbers
            raise self._unloadable(name) from None
        model = _Model(measurer, info.version)
        with self._lock:
            self._models[name] = model
        return model

    def _unloadable(self, name: str) -> AngleRequestError:
        """FAILED_PRECONDITION for a deployed model that cannot be loaded; the cause goes to the log
        (it names files), the client gets one line."""
        log.exception("cannot load angle model", extra={"model": name})
        return AngleRequestError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"cannot load model {name!r} (or its locator) on this server: the server log has the details",
        )

    def _not_deployed(self, name: str, why: str) -> AngleRequestError:
        if name == self.default_model:  # the server's own configuration is at fault, not the request
            return AngleRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{why}: deploy an angle keypoint model under that name (hipgen export angle) and restart",
            )
        return AngleRequestError.invalid([FieldViolation("model_name", why)])

    # -- one request -------------------------------------------------------------------------------
    def _prepare(self, request: angle_pb2.PredictAngleRequest) -> _Prepared | AngleRequestError:
        """Options and image checked and decoded, or why not (never raises)."""
        try:
            options, bad = parse_options(request, self.default_model)
            bad += image_violations(request.image, self.pixel_cap)
            if bad:
                return AngleRequestError.invalid(bad)
            image = _decode_checked(request.image, self.pixel_cap)
            return _Prepared(options, image, request.image.file_name)
        except AngleRequestError as e:
            return e
        except Exception:
            log.exception("angle request preparation failed")
            return AngleRequestError.internal()

    def _respond(self, item: _Prepared, m: Measurement, model: str, version: str) -> Outcome:
        try:
            rec = _record(m, item.image, item.options, item.file_name)
        except ValueError as e:
            return _unmeasurable(e)
        h, w = item.image.pixels.shape
        response = angle_pb2.PredictAngleResponse(
            label=label_to_proto(rec),
            probability_big_left=min(max(m.prob_big_left, 0.0), 1.0),
            probability_big_right=min(max(m.prob_big_right, 0.0), 1.0),
            image_class=_HIP_CLASS[
                anatomy.image_class(rec.na_left, rec.na_right, item.options.threshold_deg)
            ],
            image_width=w,
            image_height=h,
            model_name=model,
            model_version=version,
        )
        if item.image.pixel_spacing_mm is not None:
            response.left_radius_mm = rec.left_radius * item.image.pixel_spacing_mm
            response.right_radius_mm = rec.right_radius * item.image.pixel_spacing_mm
        if item.options.include_overlay:
            response.overlay_png = overlay_png(
                item.image.pixels,
                m.keypoints,
                na_left=rec.na_left,
                na_right=rec.na_right,
                prob_big_left=response.probability_big_left,
                prob_big_right=response.probability_big_right,
            )
        return response

    # -- many requests -----------------------------------------------------------------------------
    def _measure_group(self, name: str, items: Sequence[_Prepared]) -> list[Outcome]:
        """Measure images of one model in one call. An image whose hips cannot be measured fails the
        call (the geometry raises ValueError); then each is measured alone, so only it answers an error."""
        model = self._model(name)
        t0 = time.perf_counter()
        try:
            results = model.measurer.measure([it.image.pixels for it in items])
        except (ValueError, ArithmeticError) as e:
            if len(items) == 1:
                return [_unmeasurable(e)]
            return [self._measure_group(name, [it])[0] for it in items]
        INFERENCE_SECONDS.labels(model=name).observe(time.perf_counter() - t0)
        IMAGES_MEASURED.labels(model=name).inc(len(items))
        return [self._respond_one(it, m, name, model.version) for it, m in zip(items, results, strict=True)]

    def _respond_one(self, item: _Prepared, m: Measurement, model: str, version: str) -> Outcome:
        """:meth:`_respond`, with anything unexpected answering INTERNAL for this image alone."""
        try:
            return self._respond(item, m, model, version)
        except Exception:
            log.exception("angle response failed", extra={"model": model})
            return AngleRequestError.internal()

    def _finish(self, prepared: Sequence[_Prepared | AngleRequestError]) -> list[Outcome]:
        """Outcomes in input order: the valid images of each model are measured together."""
        outcomes: list[Outcome | None] = [p if isinstance(p, AngleRequestError) else None for p in prepared]
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prepared):
            if isinstance(p, _Prepared):
                groups.setdefault(p.options.model, []).append(i)
        for name, idxs in groups.items():
            try:
                results = self._measure_group(name, [prepared[i] for i in idxs])  # type: ignore[misc]
            except AngleRequestError as e:
                results = [e] * len(idxs)
            except BackendUnavailableError as e:
                log.warning("angle backend unavailable", extra={"model": name, "error": str(e)[:300]})
                results = [AngleRequestError.unavailable(e)] * len(idxs)
            except Exception:
                log.exception("angle measurement failed", extra={"model": name, "images": len(idxs)})
                results = [AngleRequestError.internal()] * len(idxs)
            for i, r in zip(idxs, results, strict=True):
                outcomes[i] = r
        return outcomes  # type: ignore[return-value]

    # -- RPCs --------------------------------------------------------------------------------------
    def PredictAngle(  # noqa: N802 (generated method name)
        self, request: angle_pb2.PredictAngleRequest, context: grpc.ServicerContext
    ) -> angle_pb2.PredictAngleResponse:
        outcome = self._finish([self._prepare(request)])[0]
        if isinstance(outcome, AngleRequestError):
            _log_refusal(outcome)
            context.abort_with_status(rpc_status.to_status(outcome.to_status()))
        return outcome

    def StreamPredictAngle(  # noqa: N802 (generated method name)
        self, request_iterator: Iterable[angle_pb2.StreamPredictAngleRequest], context: grpc.ServicerContext
    ) -> Iterator[angle_pb2.StreamPredictAngleResponse]:
        feed = _RequestFeed(request_iterator, maxsize=2 * self.batch_size)
        try:
            while context.is_active():
                batch = feed.take(self.batch_size, timeout=0.2)
                if batch is None:
                    return
                yield from self._answer_batch(batch, context)
        finally:
            feed.close()

    def _answer_batch(
        self, batch: Sequence[angle_pb2.StreamPredictAngleRequest], context: grpc.ServicerContext
    ) -> Iterator[angle_pb2.StreamPredictAngleResponse]:
        """Decode the batch's images in order, measuring whenever the decoded pixels reach the budget
        (so a batch of large studies never holds more than ``batch_pixels`` at once)."""
        pending: list[tuple[str, _Prepared | AngleRequestError]] = []
        pixels = 0
        for item in batch:
            if not context.is_active():
                return
            prepared = self._prepare(item.request)
            pending.append((item.item_id, prepared))
            pixels += prepared.image.pixels.size if isinstance(prepared, _Prepared) else 0
            if pixels >= self.batch_pixels:
                yield from self._stream_answers(pending)
                pending, pixels = [], 0
        yield from self._stream_answers(pending)

    def _stream_answers(
        self, pending: Sequence[tuple[str, _Prepared | AngleRequestError]]
    ) -> Iterator[angle_pb2.StreamPredictAngleResponse]:
        for (item_id, _), outcome in zip(pending, self._finish([p for _, p in pending]), strict=True):
            if isinstance(outcome, AngleRequestError):
                _log_refusal(outcome, item_id=item_id)
                yield angle_pb2.StreamPredictAngleResponse(item_id=item_id, error=outcome.to_status())
            else:
                yield angle_pb2.StreamPredictAngleResponse(item_id=item_id, result=outcome)


def _log_refusal(err: AngleRequestError, **extra: Any) -> None:
    """One line per refused request: the code and the fields, never the values or the pixels."""
    if err.code != grpc.StatusCode.INTERNAL:  # internal errors were logged with their traceback
        fields = [v.field for v in err.violations]
        log.info("angle request refused", extra={"code": err.code.name, "fields": fields, **extra})


_END = object()


class _RequestFeed:
    """Reads a request stream on its own thread, so the servicer can take every request that has
    already arrived as one batch without waiting for requests that have not been sent yet."""

    def __init__(self, requests: Iterable[Any], *, maxsize: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)  # bounded: back-pressure on the client
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(
            target=self._pump, args=(requests,), name="angle-stream-reader", daemon=True
        )
        self._thread.start()

    def _pump(self, requests: Iterable[Any]) -> None:
        try:
            for request in requests:
                if not self._put(request):
                    return
        except Exception as e:  # the client cancelled or the call ended: no more requests
            log.debug("request stream ended", extra={"error_type": type(e).__name__})
        finally:
            self._put(_END)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take(self, most: int, *, timeout: float) -> list[Any] | None:
        """Up to ``most`` requests: waits ``timeout`` s for the first, then takes only what has arrived.
        ``[]`` when none arrived in time, ``None`` once the stream has ended."""
        if self._ended:
            return None
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        if first is _END:
            self._ended = True
            return None
        batch = [first]
        while len(batch) < most:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                self._ended = True
                break
            batch.append(item)
        return batch

    def close(self) -> None:
        """Stop reading; the reader thread ends once the call ends (gRPC then wakes it)."""
        self._stop.set()
        self._thread.join(timeout=0.5)
