"""DatasetService on the gateway: dataset jobs (Create/Get/List/Cancel/Watch) and GenerateLabeled.

Thin: a request becomes a checked :class:`hipgen.dataset.spec.JobSpec` (every bad field named at once,
INVALID_ARGUMENT with BadRequest violations), the job goes to the store and the runner, and rows come
back as ``DatasetJob`` messages. A full queue answers RESOURCE_EXHAUSTED with RetryInfo.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import grpc
from google.protobuf import timestamp_pb2

from hipgen.api.v1 import dataset_pb2, dataset_pb2_grpc
from hipgen.dataset.destination import Destination, DestinationError
from hipgen.dataset.shards import JOB_MARKER
from hipgen.dataset.spec import AngleSpec, JobSpec
from services.audit import audit
from services.auth import ADMIN, client_id_var, scopes_var
from services.errors import FieldViolation, RequestError, violation
from services.gateway.jobs import JobRunner, QueueFullError
from services.gateway.labeled import GenerateCall, ShortStreamError, generate_labeled
from services.gateway.proxy import relay_error
from services.gateway.shard import SAMPLER_ENUMS
from services.gateway.store import ACTIVE, FINAL, JobRow, JobStore, PageTokenError

log = logging.getLogger("services.gateway")

_FORMATS = {
    dataset_pb2.DATASET_FORMAT_IMAGEFOLDER: "imagefolder",
    dataset_pb2.DATASET_FORMAT_CLASSFOLDERS: "classfolders",
    dataset_pb2.DATASET_FORMAT_WEBDATASET: "webdataset",
    dataset_pb2.DATASET_FORMAT_DICOM: "dicom",
}
_FORMAT_ENUMS = {v: k for k, v in _FORMATS.items()}
_SAMPLERS = {v: k for k, v in SAMPLER_ENUMS.items()}
_STATES = {
    name: dataset_pb2.DatasetJobState.Value(f"DATASET_JOB_STATE_{name}")
    for name in ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED")
}
_STATE_NAMES = {v: k for k, v in _STATES.items()}
_EXECUTORS = {
    dataset_pb2.DATASET_EXECUTOR_LOCAL: "local",
    dataset_pb2.DATASET_EXECUTOR_KUBERNETES: "kubernetes",
}
_EXECUTOR_ENUMS = {v: k for k, v in _EXECUTORS.items()}
JOB_ID = re.compile(r"[0-9a-f]{32}")
MAX_PAGE, DEFAULT_PAGE = 1000, 50
WATCH_POLL_S = 1.0  # a Watch also re-reads the database this often (another gateway may write it)


class DatasetRequestError(RequestError):
    pass


# --- proto ↔ spec ---------------------------------------------------------------------------------------
def angles_from_proto(a: dataset_pb2.AngleDistribution) -> AngleSpec:
    kind = a.WhichOneof("kind")
    if kind == "uniform":
        return AngleSpec("uniform", a.uniform.low_deg, a.uniform.high_deg, symmetric=a.symmetric)
    if kind == "list":
        pairs = tuple((c.na_left_deg, c.na_right_deg) for c in a.list.conditions)
        return AngleSpec("list", conditions=pairs, symmetric=a.symmetric)
    if kind == "balanced":
        b = a.balanced
        return AngleSpec(
            "balanced", b.low_deg, b.high_deg, threshold=b.threshold_deg or 105.0, symmetric=a.symmetric
        )
    if kind == "histogram":
        h = a.histogram
        return AngleSpec(
            "histogram", edges=tuple(h.edges_deg), weights=tuple(h.weights), symmetric=a.symmetric
        )
    return AngleSpec("unset")  # type: ignore[arg-type]  # problems() names the missing distribution


def angles_to_proto(a: AngleSpec) -> dataset_pb2.AngleDistribution:
    out = dataset_pb2.AngleDistribution(symmetric=a.symmetric)
    if a.kind == "uniform":
        out.uniform.low_deg, out.uniform.high_deg = a.low, a.high
    elif a.kind == "list":
        for left, right in a.conditions:
            out.list.conditions.add(na_left_deg=left, na_right_deg=right)
    elif a.kind == "balanced":
        out.balanced.low_deg, out.balanced.high_deg, out.balanced.threshold_deg = a.low, a.high, a.threshold
    elif a.kind == "histogram":
        out.histogram.edges_deg.extend(a.edges)
        out.histogram.weights.extend(a.weights)
    return out


def spec_from_proto(p: dataset_pb2.DatasetJobSpec, default_executor: str, images_per_shard: int) -> JobSpec:
    return JobSpec(
        output_uri=p.output_uri.strip(),
        format=_FORMATS.get(p.format, ""),
        count=p.count,
        angles=angles_from_proto(p.angles),
        seed=p.seed,
        sampler=_SAMPLERS.get(p.sampler),
        steps=p.steps,
        guidance_scale=p.guidance_scale if p.HasField("guidance_scale") else None,
        model_name=p.model_name.strip(),
        image_size=p.image_size,
        test_fraction=p.test_fraction,
        display_name=p.display_name,
        labels="requested" if p.labels == dataset_pb2.LABEL_SOURCE_REQUESTED else "measured",
        tolerance_deg=p.tolerance_deg if p.HasField("tolerance_deg") else None,
        max_regenerations=p.max_regenerations,
        reference_uri=p.reference_uri.strip(),
        images_per_shard=p.images_per_shard or images_per_shard,
        executor=_EXECUTORS.get(p.executor, default_executor),  # type: ignore[arg-type]
    )


def spec_to_proto(s: JobSpec) -> dataset_pb2.DatasetJobSpec:
    out = dataset_pb2.DatasetJobSpec(
        output_uri=s.output_uri,
        format=_FORMAT_ENUMS.get(s.format, 0),
        seed=s.seed,
        sampler=SAMPLER_ENUMS.get(s.sampler or "", 0),
        steps=s.steps,
        model_name=s.model_name,
        image_size=s.image_size,
        test_fraction=s.test_fraction,
        display_name=s.display_name,
        count=s.count,
        angles=angles_to_proto(s.angles),
        labels=dataset_pb2.LABEL_SOURCE_REQUESTED
        if s.labels == "requested"
        else dataset_pb2.LABEL_SOURCE_MEASURED,
        max_regenerations=s.max_regenerations,
        reference_uri=s.reference_uri,
        images_per_shard=s.images_per_shard,
        executor=_EXECUTOR_ENUMS[s.executor],
    )
    if s.guidance_scale is not None:
        out.guidance_scale = s.guidance_scale
    if s.tolerance_deg is not None:
        out.tolerance_deg = s.tolerance_deg
    return out


def _ts(t: float | None) -> timestamp_pb2.Timestamp | None:
    if t is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def job_to_proto(row: JobRow) -> dataset_pb2.DatasetJob:
    job = dataset_pb2.DatasetJob(
        job_id=row.job_id,
        spec=spec_to_proto(JobSpec.from_json(row.spec_json)),
        state=_STATES[row.state],
        progress=dataset_pb2.DatasetJobProgress(
            images_done=row.images_done,
            images_total=row.images_total,
            bytes_written=row.bytes_written,
            images_rejected=row.images_rejected,
            images_out_of_tolerance=row.out_of_tolerance,
            shards_done=row.shards_done,
            shards_total=row.shards_total,
        ),
        manifest_uri=row.manifest_uri,
        score_report_uri=row.score_report_uri,
        kubernetes_job_name=row.kubernetes_job_name,
        create_time=_ts(row.create_time),
        start_time=_ts(row.start_time),
        end_time=_ts(row.end_time),
    )
    if row.state == "FAILED":
        job.error.code, job.error.message = row.error_code, row.error_message
    fid = row.fidelity
    if fid:
        job.fidelity.angles, job.fidelity.mae_deg, job.fidelity.pearson_r = (
            fid["angles"],
            fid["mae_deg"],
            fid["pearson_r"],
        )
    return job


def destination_key(uri: str) -> str:
    """One spelling per destination: an absolute, normalised local path, or ``s3://bucket/prefix``."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return str(Path(url2pathname(parsed.path)).resolve())
    return f"s3://{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")


def nested(a: str, b: str) -> bool:
    """Whether one destination lies inside the other (or they are the same)."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


_ENUM_FIELDS = (
    ("format", dataset_pb2.DatasetFormat),
    ("labels", dataset_pb2.LabelSource),
    ("executor", dataset_pb2.DatasetExecutor),
)


def unknown_enums(p: dataset_pb2.DatasetJobSpec) -> list[FieldViolation]:
    """Enum numbers this server does not know (a newer client) are refused, never silently defaulted."""
    from hipgen.api.v1 import generate_pb2

    bad = [
        FieldViolation(f"spec.{name}", f"unknown value {getattr(p, name)}")
        for name, enum in _ENUM_FIELDS
        if getattr(p, name) and getattr(p, name) not in enum.values()
    ]
    if p.sampler == generate_pb2.SAMPLER_DPM_SOLVER:
        bad.append(FieldViolation("spec.sampler", "DPM-Solver is not available; use DDPM, DDIM or LCM"))
    elif p.sampler and p.sampler not in generate_pb2.Sampler.values():
        bad.append(FieldViolation("spec.sampler", f"unknown value {p.sampler}"))
    return bad


# --- the servicer -----------------------------------------------------------------------------------------
class DatasetServicer(dataset_pb2_grpc.DatasetServiceServicer):
    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        *,
        generate: Callable[[grpc.ServicerContext], GenerateCall],
        output_root: Path,
        max_images: int,
        max_regenerations: int,
        images_per_shard: int,
        default_executor: str = "local",
        max_watches: int = 4,
    ) -> None:
        self.store, self.runner = store, runner
        self.generate = generate
        self.output_root = output_root
        self.max_images, self.max_regenerations = max_images, max_regenerations
        self.images_per_shard, self.default_executor = images_per_shard, default_executor
        self._create_lock = threading.Lock()
        self._watch_slots = threading.BoundedSemaphore(max_watches)

    # -- checks --------------------------------------------------------------------------------------
    def _check_output(self, spec: JobSpec) -> list[FieldViolation]:
        """The destination must be inside the output root (file://), reachable, empty, and no other active
        job may write into it, above it or below it. Call under ``_create_lock``."""
        dest_key = destination_key(spec.output_uri)
        if urlparse(spec.output_uri).scheme == "file":
            root = self.output_root.resolve()
            path = Path(dest_key)
            if path != root and root not in path.parents:
                return [FieldViolation("spec.output_uri", f"file:// outputs must lie inside {root}")]
        for row in self.store.in_states(ACTIVE):
            other = destination_key(JobSpec.from_json(row.spec_json).output_uri)
            if nested(dest_key, other):
                return [FieldViolation("spec.output_uri", f"job {row.job_id} is writing into {other}")]
        try:
            dest = Destination(spec.output_uri)
            dest.check_writable()
            if dest.listing():
                return [FieldViolation("spec.output_uri", "the destination is not empty; give a new folder")]
        except (DestinationError, OSError, ValueError, ImportError) as e:
            return [FieldViolation("spec.output_uri", str(e)[:300])]
        return []

    @staticmethod
    def _owner_filter() -> str | None:
        """Jobs belong to the client that created them: the caller's id, or None when it sees every job
        (``admin``, or a server without auth)."""
        client = client_id_var.get()
        return None if client is None or ADMIN in (scopes_var.get() or ()) else client

    def _visible(self, row: JobRow) -> bool:
        owner = self._owner_filter()
        return owner is None or row.owner == owner

    def _job(self, job_id: str) -> JobRow:
        if not JOB_ID.fullmatch(job_id):
            raise DatasetRequestError.invalid(
                [FieldViolation("job_id", "not a dataset job id (32 hex digits)")]
            )
        row = self.store.get(job_id)
        if row is None or not self._visible(row):  # another client's job does not exist for this one
            raise DatasetRequestError(grpc.StatusCode.NOT_FOUND, f"no dataset job {job_id}")
        return row

    # -- RPCs ----------------------------------------------------------------------------------------
    def CreateDatasetJob(self, request: dataset_pb2.CreateDatasetJobRequest, context: grpc.ServicerContext):
        try:
            if len(request.request_id) > 200:
                raise DatasetRequestError.invalid([FieldViolation("request_id", "at most 200 characters")])
            owner = client_id_var.get() or ""
            key = f"{owner}\x1f{request.request_id}" if request.request_id else None  # idempotency per client
            spec = spec_from_proto(request.spec, self.default_executor, self.images_per_shard)
            if key:
                existing = self.store.by_request_id(key)
                if existing is not None:
                    if JobSpec.from_json(existing.spec_json) != spec:
                        raise DatasetRequestError(
                            grpc.StatusCode.ALREADY_EXISTS,
                            f"request_id {request.request_id!r} already names job {existing.job_id}, "
                            "which has a different spec",
                        )
                    return dataset_pb2.CreateDatasetJobResponse(job=job_to_proto(existing))
            bad: list[FieldViolation] = [
                violation(e)
                for e in spec.problems(max_images=self.max_images, max_regenerations=self.max_regenerations)
            ]
            bad += unknown_enums(request.spec)
            if bad:
                raise DatasetRequestError.invalid(bad)
            with self._create_lock:  # checks, admission and insert together: the bounds hold under races
                bad = self._check_output(spec)
                if bad:
                    raise DatasetRequestError.invalid(bad)
                try:
                    self.runner.admit()
                except QueueFullError as e:
                    raise DatasetRequestError.exhausted(
                        "the dataset-job queue is full; retry later", e.retry_after_s
                    ) from None
                row, created = self.store.create(
                    spec.to_json(),
                    request_id=key,
                    owner=owner,
                    images_total=spec.count,
                    shards_total=spec.shard_count,
                )
                if created:  # claim the destination at once: a second job sees it not empty
                    try:
                        Destination(spec.output_uri).put(
                            JOB_MARKER, json.dumps({"job_id": row.job_id}).encode()
                        )
                    except OSError as e:
                        self.store.update(
                            row.job_id,
                            state="FAILED",
                            error_code=grpc.StatusCode.UNAVAILABLE.value[0],
                            error_message=f"cannot write {spec.output_uri}: {e}",
                            end_time=time.time(),
                        )
                        raise DatasetRequestError.invalid(
                            [FieldViolation("spec.output_uri", str(e)[:300])]
                        ) from None
            if created:
                audit(
                    "dataset_job.created",
                    job_id=row.job_id,
                    count=spec.count,
                    format=spec.format,
                    output_uri=spec.output_uri,
                    executor=spec.executor,
                )
                self.runner.submit(row.job_id)
            return dataset_pb2.CreateDatasetJobResponse(job=job_to_proto(row))
        except RequestError as e:
            e.abort(context)

    def GetDatasetJob(self, request: dataset_pb2.GetDatasetJobRequest, context: grpc.ServicerContext):
        try:
            return dataset_pb2.GetDatasetJobResponse(job=job_to_proto(self._job(request.job_id)))
        except RequestError as e:
            e.abort(context)

    def ListDatasetJobs(self, request: dataset_pb2.ListDatasetJobsRequest, context: grpc.ServicerContext):
        try:
            size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
            state = _STATE_NAMES.get(request.state_filter)
            if request.state_filter and state is None:
                raise DatasetRequestError.invalid([FieldViolation("state_filter", "unknown state")])
            try:
                rows, token = self.store.page(size, request.page_token, state, owner=self._owner_filter())
            except PageTokenError as e:
                raise DatasetRequestError.invalid([FieldViolation("page_token", str(e))]) from None
            return dataset_pb2.ListDatasetJobsResponse(
                jobs=[job_to_proto(r) for r in rows], next_page_token=token
            )
        except RequestError as e:
            e.abort(context)

    def CancelDatasetJob(self, request: dataset_pb2.CancelDatasetJobRequest, context: grpc.ServicerContext):
        try:
            row = self._job(request.job_id)
            if row.state not in FINAL:
                self.runner.cancel(row.job_id)
                audit("dataset_job.cancelled", job_id=row.job_id)
            return dataset_pb2.CancelDatasetJobResponse(job=job_to_proto(self._job(request.job_id)))
        except RequestError as e:
            e.abort(context)

    def WatchDatasetJob(
        self, request: dataset_pb2.WatchDatasetJobRequest, context: grpc.ServicerContext
    ) -> Iterator[dataset_pb2.WatchDatasetJobResponse]:
        try:
            row = self._job(request.job_id)
            if not self._watch_slots.acquire(blocking=False):  # each Watch holds a server thread
                raise DatasetRequestError.exhausted("too many jobs are being watched; retry later", 5.0)
        except RequestError as e:
            e.abort(context)
            return
        try:
            yield from self._watch(row, request.job_id, context)
        finally:
            self._watch_slots.release()

    def _watch(
        self, row: JobRow, job_id: str, context: grpc.ServicerContext
    ) -> Iterator[dataset_pb2.WatchDatasetJobResponse]:
        version = row.version
        yield dataset_pb2.WatchDatasetJobResponse(job=job_to_proto(row))
        while row.state not in FINAL and context.is_active():
            with self.store.changed:
                self.store.changed.wait(WATCH_POLL_S)
            current = self.store.get(job_id)
            if current is None:
                return
            if current.version != version:
                row, version = current, current.version
                yield dataset_pb2.WatchDatasetJobResponse(job=job_to_proto(row))

    def GenerateLabeled(self, request: dataset_pb2.GenerateLabeledRequest, context: grpc.ServicerContext):
        try:
            bad: list[FieldViolation] = []
            tol = request.tolerance_deg if request.HasField("tolerance_deg") else None
            if tol is not None and not (math.isfinite(tol) and tol > 0):
                bad.append(FieldViolation("tolerance_deg", "must be a finite number of degrees > 0"))
            if request.max_regenerations > self.max_regenerations:
                bad.append(FieldViolation("max_regenerations", f"at most {self.max_regenerations}"))
            if not request.HasField("generate"):
                bad.append(FieldViolation("generate", "give the generation request"))
            per = request.generate.images_per_condition or 1
            total = per * len(request.generate.conditions)
            if total > self.max_images:  # checked before generate_labeled builds a list of that length
                bad.append(
                    FieldViolation(
                        "generate.images_per_condition" if per > 1 else "generate.conditions",
                        f"{total} images asked for; at most {self.max_images}",
                    )
                )
            if bad:
                raise DatasetRequestError.invalid(bad)
            try:
                return generate_labeled(
                    self.generate(context),
                    request.generate,
                    tolerance_deg=tol,
                    max_regenerations=request.max_regenerations,
                )
            except grpc.RpcError as e:  # GenerateService's own answer (its field names are under generate.)
                relay_error(e, context)
            except ShortStreamError as e:
                raise DatasetRequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from None
        except RequestError as e:
            e.abort(context)


__all__ = ["DatasetServicer", "job_to_proto", "spec_from_proto", "spec_to_proto"]
