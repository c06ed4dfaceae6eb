"""ScoreService servicer: two image sets → :func:`hipgen.score.scoring.score_sets` → a metrics report.

Thin by design: reading sets is :mod:`hipgen.score.sets`, features are :mod:`hipgen.score.features`
(ONNX Runtime, no torch), every metric is :mod:`hipgen.metrics`. What lives here:

- **Sets.** By reference (``file://`` or a path inside ``Settings.score_data_root``, resolved with
  symlinks followed — nothing outside it is read; or ``s3://`` through fsspec) or inline images
  (PNG/JPEG/DICOM/raw, each checked as AngleService checks one). At most ``score_max_images`` per set.
- **Errors.** Every bad field at once as INVALID_ARGUMENT with ``BadRequest`` violations:
  ``reference`` / ``candidate`` (missing, unreadable, empty, too large, outside the data root),
  ``…inline_images.images[i].data``, ``…inline_images.conditions`` (not parallel to the images),
  ``metrics`` (unknown names), ``feature_backbone`` (not offered), ``image_size``. A default backbone or
  angle model that is not deployed answers FAILED_PRECONDITION. Anything unexpected answers INTERNAL
  with a generic message and is logged here (never pixel data).
- **Load.** At most ``score_max_concurrent`` runs at once; more answer RESOURCE_EXHAUSTED (with a
  ``RetryInfo`` of ``BUSY_RETRY_S``) at once rather than queue behind minutes of work.
- **Size of errors.** A violation's description may echo the request (a URI, a backbone or metric name,
  megabytes long): each is cut to ``DESCRIPTION_BYTES`` so the status fits gRPC's 8 KiB of trailing
  metadata — over it the client would see RESOURCE_EXHAUSTED from its own transport instead.
- **Streaming.** ``StreamScoreSets`` runs the same computation on a worker thread and forwards its
  progress events; a cancelled call (or a passed deadline) stops it between batches.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import numpy as np
from prometheus_client import Counter, Histogram

from hipgen.angle.measure import measurer_from_backend
from hipgen.api.v1 import score_pb2, score_pb2_grpc
from hipgen.inference.backend import Backend, ModelNotFoundError
from hipgen.score.features import DEFAULT_BACKBONE, UnknownBackboneError, available_backbones, backbone_for
from hipgen.score.scoring import Cancelled, ScoreOptionError, ScoreOptions, ScoreReport, score_sets
from hipgen.score.sets import ImageSet, SetError, UnitImages, load_set, resolve_inside
from hipgen.settings import Settings
from services.angle.servicer import decode_image
from services.errors import FieldViolation, RequestError, violation

log = logging.getLogger("services.score")

INTERNAL_MESSAGE = "internal error while scoring (the server log has the details)"
SCORE_SECONDS = Histogram(
    "hipgen_score_seconds",
    "Seconds of one scoring run (reading both sets, features, every metric).",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
SCORED_IMAGES = Counter("hipgen_score_images", "Images read for scoring.", ["role"])
SCORE_CANCELLED = Counter("hipgen_score_cancelled", "Scoring runs stopped because the call was cancelled.")


BUSY_RETRY_S = 10.0  # RetryInfo of a refusal because every scoring slot is busy
DESCRIPTION_BYTES = 200  # longest violation description (UTF-8 bytes); ten of them stay well inside 8 KiB


def _clip(text: str, limit: int = DESCRIPTION_BYTES) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[: limit - 3].decode(errors="ignore") + "..."


class ScoreRequestError(RequestError):
    @classmethod
    def invalid(cls, violations):  # noqa: ANN206 - as RequestError.invalid
        """INVALID_ARGUMENT with every description cut to :data:`DESCRIPTION_BYTES`."""
        return super().invalid([FieldViolation(v.field, _clip(v.description)) for v in violations])


def _set_violations(
    req: score_pb2.ScoreSetsRequest, settings: Settings, folders: dict[str, Path]
) -> list[FieldViolation]:
    """Everything wrong with the two sets that the request tells; ``folders`` receives the checked
    local folder of each ``file://`` set, which is what gets read (never the name again)."""
    bad = []
    for role in ("reference", "candidate"):
        s: score_pb2.ImageSet = getattr(req, role)
        kind = s.WhichOneof("source") if req.HasField(role) else None
        if kind is None:
            bad.append(FieldViolation(role, "is required: a uri or inline_images"))
        elif kind == "uri":
            found = _uri_violations(f"{role}.uri", s.uri, settings.score_data_root)
            if isinstance(found, Path):
                folders[role] = found
            else:
                bad += found
        else:
            imgs = s.inline_images
            if not imgs.images:
                bad.append(FieldViolation(f"{role}.inline_images.images", "is empty"))
            if len(imgs.images) > settings.score_max_images:
                bad.append(
                    FieldViolation(
                        f"{role}.inline_images.images",
                        f"{len(imgs.images)} images; the server scores at most {settings.score_max_images}",
                    )
                )
            if imgs.conditions and len(imgs.conditions) != len(imgs.images):
                bad.append(
                    FieldViolation(
                        f"{role}.inline_images.conditions",
                        f"must be empty or one per image ({len(imgs.images)}), got {len(imgs.conditions)}",
                    )
                )
            for i, c in enumerate(imgs.conditions):
                for side in ("na_left_deg", "na_right_deg"):
                    v = getattr(c, side)
                    if not (math.isfinite(v) and 0.0 < v < 180.0):
                        bad.append(
                            FieldViolation(
                                f"{role}.inline_images.conditions[{i}].{side}",
                                f"must be an angle in (0, 180) degrees, got {v}",
                            )
                        )
    return bad


def _uri_violations(field: str, uri: str, root: Path) -> list[FieldViolation] | Path:
    """The violations of a set URI, or the resolved folder of a good local one."""
    parsed = urlparse(uri)
    if not uri:
        return [FieldViolation(field, "is empty")]
    if parsed.scheme == "s3":
        return [] if parsed.netloc else [FieldViolation(field, f"{uri}: no bucket")]
    if parsed.scheme not in ("", "file"):
        return [FieldViolation(field, f"{uri}: only file:// and s3:// URIs are read")]
    try:
        where = resolve_inside(uri, root)
    except (ValueError, OSError) as e:  # a NUL byte, a name too long for the file system
        return [FieldViolation(field, f"not a usable path ({type(e).__name__}: {e})")]
    return [FieldViolation(field, f"{uri}: {where}")] if isinstance(where, str) else where


def _inline(role: str, s: score_pb2.InlineImageSet, pixel_cap: int) -> ImageSet:
    images, names, bad = UnitImages(), [], []
    for i, im in enumerate(s.images):
        try:
            images.append(decode_image(im, pixel_cap).pixels)
            names.append(im.file_name or f"{role}_{i}")
        except RequestError as e:
            for v in e.violations:
                bad.append(
                    FieldViolation(
                        f"{role}.inline_images.images[{i}]{v.field.removeprefix('image')}", v.description
                    )
                )
    if bad:
        raise ScoreRequestError.invalid(bad)
    requested = None
    if s.conditions:
        requested = np.array([[c.na_left_deg, c.na_right_deg] for c in s.conditions], np.float64)
    return ImageSet(images, names, [None] * len(images), requested, f"inline ({len(images)} images)")


def _to_proto(report: ScoreReport) -> score_pb2.ScoreSetsResponse:
    out = score_pb2.ScoreSetsResponse(
        feature_backbone=report.backbone,
        reference_count=report.reference_count,
        candidate_count=report.candidate_count,
        notes=report.notes,
    )
    for m in report.metrics:
        pm = out.metrics.add(
            name=m.name, value=m.value, standard_error=m.standard_error, sample_count=m.sample_count
        )
        if m.noise_baseline is not None:
            pm.noise_baseline = m.noise_baseline
    if report.memorisation is not None:
        out.metrics.add(
            name="memorisation",
            value=report.memorisation.flagged_fraction,
            sample_count=len(report.memorisation.score),
        )
    if report.fidelity:
        for side, msg in (("left", out.angle_fidelity_left), ("right", out.angle_fidelity_right)):
            f = report.fidelity[side]
            msg.pearson_r = f.pearson_r  # NaN where undefined (e.g. one requested angle for all images)
            msg.r_squared = f.r2
            msg.mean_absolute_error_deg = f.mae
            msg.rmse_deg = f.rmse
            msg.bias_deg = f.bias
            msg.count = f.n
    return out


class ScoreServicer(score_pb2_grpc.ScoreServiceServicer):
    def __init__(self, backend: Backend, settings: Settings, repository: str | Path | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.repository = Path(repository or settings.model_repository)
        self._slots = threading.BoundedSemaphore(settings.score_max_concurrent)
        self._lock = threading.Lock()
        self._backbones: dict[str, Any] = {}
        self._measurer: Any = None

    def _models(self, backbone: str | None) -> tuple[Any, Any]:
        """The named backbone and the angle model, loaded once and kept (both are thread-safe)."""
        key = backbone or DEFAULT_BACKBONE
        with self._lock:
            if key not in self._backbones:
                self._backbones[key] = backbone_for(self.repository, key, self.backend)
            if self._measurer is None:
                self._measurer = measurer_from_backend(self.backend)
            return self._backbones[key], self._measurer

    def warm_up(self) -> bool:
        """Load the default backbone and angle model now; False (logged) when they are not deployed."""
        try:
            self._models(None)
            return True
        except Exception as e:  # missing or unloadable (corrupt ONNX): the server starts regardless
            log.warning("score models not loaded", extra={"error": f"{type(e).__name__}: {e}"})
            return False

    # --- one run ------------------------------------------------------------------------------------
    def _options(self, req: score_pb2.ScoreSetsRequest, folders: dict[str, Path]) -> ScoreOptions:
        options = ScoreOptions(metrics=tuple(req.metrics), image_size=req.image_size, seed=req.seed)
        bad = []
        for check in (options.chosen, options.structural_size):
            try:
                check()
            except ScoreOptionError as e:
                if not any(v.field == e.field for v in bad):
                    bad.append(violation(e))
        name = req.feature_backbone
        if name and name not in available_backbones(self.repository):
            offered = available_backbones(self.repository)
            bad.append(
                FieldViolation("feature_backbone", f"unknown backbone {name!r}; this server offers {offered}")
            )
        bad += _set_violations(req, self.settings, folders)
        if bad:
            raise ScoreRequestError.invalid(bad)
        return options

    def _read(
        self,
        role: str,
        s: score_pb2.ImageSet,
        folder: Path | None,
        progress: Callable[[str, int, int], None],
        cancelled: Callable[[], bool],
    ) -> ImageSet:
        if s.WhichOneof("source") == "inline_images":
            out = _inline(role, s.inline_images, self.settings.max_image_pixels)
        else:
            uri = str(folder) if folder is not None else s.uri  # a local set: the folder that was checked

            def on_image(n: int) -> None:
                if cancelled():
                    raise Cancelled(f"read: {role}")
                progress(f"read: {role}", n, 0)

            try:
                out = load_set(
                    uri, limit=self.settings.score_max_images, field_name=f"{role}.uri", on_image=on_image
                )
            except SetError as e:
                raise ScoreRequestError.invalid(
                    [FieldViolation(e.field, e.reason.replace(uri, s.uri))]
                ) from None
            out.source = s.uri
        SCORED_IMAGES.labels(role).inc(len(out))
        return out

    def _run(
        self,
        req: score_pb2.ScoreSetsRequest,
        progress: Callable[[str, int, int], None],
        cancelled: Callable[[], bool],
    ) -> score_pb2.ScoreSetsResponse:
        folders: dict[str, Path] = {}
        options = self._options(req, folders)
        if not self._slots.acquire(blocking=False):
            raise ScoreRequestError.exhausted(
                f"the server is already computing {self.settings.score_max_concurrent} scoring runs; "
                "retry later",
                BUSY_RETRY_S,
            )
        try:
            with SCORE_SECONDS.time():
                try:
                    backbone, measurer = self._models(req.feature_backbone or None)
                except (UnknownBackboneError, ModelNotFoundError) as e:
                    raise ScoreRequestError(
                        grpc.StatusCode.FAILED_PRECONDITION, f"a default scoring model is not deployed: {e}"
                    ) from None
                except Exception as e:  # deployed but unloadable (a corrupt model.onnx or MANIFEST.json)
                    log.error("scoring models cannot be loaded", exc_info=e)
                    raise ScoreRequestError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        "a scoring model is deployed but cannot be loaded (the server log has the details)",
                    ) from None
                reference = self._read(
                    "reference", req.reference, folders.get("reference"), progress, cancelled
                )
                candidate = self._read(
                    "candidate", req.candidate, folders.get("candidate"), progress, cancelled
                )
                try:
                    report = score_sets(
                        reference,
                        candidate,
                        options,
                        backbone=backbone,
                        measurer=measurer,
                        on_progress=progress,
                        cancelled=cancelled,
                    )
                except ScoreOptionError as e:
                    raise ScoreRequestError.invalid([violation(e)]) from None
                return _to_proto(report)
        finally:
            self._slots.release()

    # --- RPCs ---------------------------------------------------------------------------------------
    def ScoreSets(  # noqa: N802 (generated method name)
        self, request: score_pb2.ScoreSetsRequest, context: grpc.ServicerContext
    ) -> score_pb2.ScoreSetsResponse:
        try:
            return self._run(request, lambda *_: None, lambda: not context.is_active())
        except ScoreRequestError as e:
            e.abort(context)
        except Cancelled:
            SCORE_CANCELLED.inc()
            context.abort(grpc.StatusCode.CANCELLED, "cancelled")
        except Exception:
            log.exception("scoring failed")
            context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        raise AssertionError("unreachable")  # abort raises

    def StreamScoreSets(  # noqa: N802 (generated method name)
        self, request: score_pb2.StreamScoreSetsRequest, context: grpc.ServicerContext
    ) -> Iterator[score_pb2.StreamScoreSetsResponse]:
        """The run happens on a worker thread that never blocks on the client: progress events go into a
        bounded queue (dropped when the client reads slowly — never the result), completion is an
        event, and a cancelled call stops the worker at its next image or batch."""
        events: queue.Queue[score_pb2.StreamScoreSetsResponse] = queue.Queue(maxsize=256)
        finished = threading.Event()
        stop = threading.Event()
        result: dict[str, Any] = {}

        def progress(stage: str, n: int, total: int) -> None:
            msg = score_pb2.StreamScoreSetsResponse(
                progress=score_pb2.ScoreProgress(stage=stage, done=n, total=total)
            )
            with contextlib.suppress(queue.Full):
                events.put_nowait(msg)

        def work() -> None:
            try:
                result["response"] = self._run(request.request, progress, stop.is_set)
            except Cancelled:
                SCORE_CANCELLED.inc()
                result["cancelled"] = True
            except ScoreRequestError as e:
                result["error"] = e
            except Exception:
                log.exception("scoring failed")
                result["internal"] = True
            finally:
                finished.set()

        threading.Thread(target=work, name="score-run", daemon=True).start()
        try:
            while not (finished.is_set() and events.empty()):
                if not context.is_active():
                    return
                try:
                    yield events.get(timeout=0.2)
                except queue.Empty:
                    continue
        finally:
            if not finished.is_set():
                stop.set()  # the client went away: the worker stops at its next check
        if "error" in result:
            result["error"].abort(context)
        elif result.get("cancelled"):
            context.abort(grpc.StatusCode.CANCELLED, "cancelled")
        elif result.get("internal"):
            context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        else:
            yield score_pb2.StreamScoreSetsResponse(result=result["response"])


__all__ = ["ScoreRequestError", "ScoreServicer"]
