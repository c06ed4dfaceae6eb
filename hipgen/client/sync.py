"""The blocking client (``grpc`` channels): :class:`HipgenClient`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from hipgen.api.v1 import (
    angle_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
    generate_pb2_grpc,
    score_pb2,
    score_pb2_grpc,
)
from hipgen.client import builders
from hipgen.client._common import (
    DEFAULT_LONG_TIMEOUT_S,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    CallPolicy,
    ChannelConfig,
    new_request_id,
    rpc_name,
)
from hipgen.client.errors import RetryPolicy
from hipgen.client.types import (
    AngleResult,
    DatasetJob,
    GeneratedImage,
    GenerateProgress,
    LabeledResult,
    ScoreReport,
)

T = TypeVar("T")
GenerateEvent = GenerateProgress | GeneratedImage


class HipgenClient:
    """A typed client for the hipgen gateway (all four services) or any single service.

    Every call has a deadline (``timeout_s`` for quick calls, ``long_timeout_s`` for generation,
    scoring and watches; both overridable per call). Calls that are safe to repeat — every unary read,
    CreateDatasetJob (it sends one idempotency key on every attempt) and CancelDatasetJob — are retried
    on UNAVAILABLE with exponential backoff and jitter, and on RESOURCE_EXHAUSTED after the delay the
    server's ``RetryInfo`` asks for, within the deadline. Streams are retried only before their first
    message, except Watch, which re-opens (it starts with the job's current state). Failures raise
    :class:`~hipgen.client.ClientError`.

    Use it as a context manager (``with HipgenClient("127.0.0.1:50051") as c: ...``) or ``close()`` it.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        long_timeout_s: float = DEFAULT_LONG_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        retry_policy: RetryPolicy | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: Sequence[tuple[str, Any]] = (),
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.config = ChannelConfig(
            target, tls, ca_file, cert_file, key_file, token, max_message_bytes, options
        )
        self.policy = CallPolicy(timeout_s, long_timeout_s, retry_policy or RetryPolicy(retries=retries))
        self._metadata = self.config.metadata(metadata)
        self.channel: grpc.Channel = self.config.open_sync()
        self.angle_stub = angle_pb2_grpc.AngleServiceStub(self.channel)
        self.generate_stub = generate_pb2_grpc.GenerateServiceStub(self.channel)
        self.score_stub = score_pb2_grpc.ScoreServiceStub(self.channel)
        self.dataset_stub = dataset_pb2_grpc.DatasetServiceStub(self.channel)

    # -- life cycle --------------------------------------------------------------------------------------
    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> HipgenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the channel is connected (raises ``grpc.FutureTimeoutError`` after ``timeout_s``)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    # -- plumbing ----------------------------------------------------------------------------------------
    def _unary(self, method: Callable[..., T], request: Any, timeout: float, *, retry: bool = True) -> T:
        deadline = time.monotonic() + timeout
        name = rpc_name(method)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 1e-3), metadata=self._metadata)
            except grpc.RpcError as err:
                error, delay = self.policy.next_delay(name, err, attempt, deadline - time.monotonic(), retry)
                if delay is None:
                    raise error from err
            attempt += 1
            time.sleep(delay)

    def _stream(
        self, method: Callable[..., Any], request: Any, timeout: float, *, resumable: bool = False
    ) -> Iterator[Any]:
        """Messages of a server stream; retried before the first message (or, ``resumable``, after any
        message too: the attempt count restarts whenever a message arrives)."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            call = method(request, timeout=max(deadline - time.monotonic(), 1e-3), metadata=self._metadata)
            received = False
            try:
                for message in call:
                    received = True
                    yield message
                return
            except grpc.RpcError as err:
                if received and resumable:
                    attempt = 0
                error, delay = self.policy.next_delay(
                    rpc_name(method), err, attempt, deadline - time.monotonic(), resumable or not received
                )
                if delay is None:
                    raise error from err
            finally:
                call.cancel()  # a consumer that stops early stops the server's work too
            attempt += 1
            time.sleep(delay)

    # -- AngleService ------------------------------------------------------------------------------------
    def predict_angle(
        self,
        image: builders.ImageInput,
        *,
        include_overlay: bool = False,
        grading_scheme: str = "",
        class_threshold_deg: float | None = None,
        model_name: str = "",
        encoding: str | int | None = None,
        width: int = 0,
        height: int = 0,
        pixel_spacing_mm: float = 0.0,
        file_name: str | None = None,
        timeout_s: float | None = None,
    ) -> AngleResult:
        """Measure one radiograph (bytes, a file path or an ``Image``)."""
        req = builders.predict_angle_request(
            image,
            include_overlay=include_overlay,
            grading_scheme=grading_scheme,
            class_threshold_deg=class_threshold_deg,
            model_name=model_name,
            encoding=encoding,
            width=width,
            height=height,
            pixel_spacing_mm=pixel_spacing_mm,
            file_name=file_name,
        )
        resp = self._unary(self.angle_stub.PredictAngle, req, self.policy.timeout(timeout_s))
        return AngleResult.from_proto(resp)

    # -- GenerateService ---------------------------------------------------------------------------------
    def generate_stream(
        self, conditions: Iterable[builders.Condition], *, timeout_s: float | None = None, **kw: Any
    ) -> Iterator[GenerateEvent]:
        """Progress events and images as the server sends them. ``conditions`` are ``(left_deg,
        right_deg)`` pairs; keywords as :meth:`generate`."""
        req = builders.generate_request(conditions, **kw)
        stream = self._stream(self.generate_stub.Generate, req, self.policy.timeout(timeout_s, long=True))
        return (
            GenerateProgress.from_proto(ev.progress)
            if ev.HasField("progress")
            else GeneratedImage.from_proto(ev.image)
            for ev in stream
            if ev.HasField("progress") or ev.HasField("image")
        )

    def generate(
        self,
        conditions: Iterable[builders.Condition],
        *,
        images_per_condition: int = 1,
        seed: int | None = None,
        sampler: str | int | None = None,
        steps: int = 0,
        guidance_scale: float | None = None,
        model_name: str = "",
        image_size: int = 0,
        output_encoding: str | int | None = None,
        on_progress: Callable[[GenerateProgress], None] | None = None,
        timeout_s: float | None = None,
    ) -> list[GeneratedImage]:
        """Generate images for requested angle pairs (image k uses ``seed + k``; ``sampler`` by name,
        e.g. ``"lcm"``) and return them in output order, each with its measured label."""
        images = []
        for ev in self.generate_stream(
            conditions,
            timeout_s=timeout_s,
            images_per_condition=images_per_condition,
            seed=seed,
            sampler=sampler,
            steps=steps,
            guidance_scale=guidance_scale,
            model_name=model_name,
            image_size=image_size,
            output_encoding=output_encoding,
        ):
            if isinstance(ev, GeneratedImage):
                images.append(ev)
            elif on_progress is not None:
                on_progress(ev)
        return images

    def generate_labeled(
        self,
        conditions: Iterable[builders.Condition],
        *,
        tolerance_deg: float | None = None,
        max_regenerations: int = 0,
        timeout_s: float | None = None,
        **generate_kw: Any,
    ) -> LabeledResult:
        """Generate, measure and (with ``tolerance_deg``) keep only images within the tolerance,
        regenerating up to ``max_regenerations`` times each (DatasetService.GenerateLabeled)."""
        req = dataset_pb2.GenerateLabeledRequest(
            generate=builders.generate_request(conditions, **generate_kw), max_regenerations=max_regenerations
        )
        if tolerance_deg is not None:
            req.tolerance_deg = tolerance_deg
        resp = self._unary(self.dataset_stub.GenerateLabeled, req, self.policy.timeout(timeout_s, long=True))
        return LabeledResult.from_proto(resp)

    # -- ScoreService ------------------------------------------------------------------------------------
    def score_sets(
        self,
        reference: str | os.PathLike[str] | Sequence[builders.ImageInput],
        candidate: str | os.PathLike[str] | Sequence[builders.ImageInput],
        *,
        metrics: Sequence[str] = (),
        feature_backbone: str = "",
        image_size: int = 0,
        seed: int = 0,
        timeout_s: float | None = None,
    ) -> ScoreReport:
        """Score ``candidate`` against ``reference``: each a location (URI or path) the server can read,
        or a sequence of images sent inline."""
        req = score_pb2.ScoreSetsRequest(
            reference=builders.image_set(reference),
            candidate=builders.image_set(candidate),
            metrics=list(metrics),
            feature_backbone=feature_backbone,
            image_size=image_size,
            seed=seed,
        )
        resp = self._unary(self.score_stub.ScoreSets, req, self.policy.timeout(timeout_s, long=True))
        return ScoreReport.from_proto(resp)

    # -- DatasetService ----------------------------------------------------------------------------------
    def create_dataset_job(
        self,
        spec: dataset_pb2.DatasetJobSpec | None = None,
        *,
        request_id: str | None = None,
        timeout_s: float | None = None,
        **spec_kw: Any,
    ) -> DatasetJob:
        """Start a dataset job from a ``DatasetJobSpec`` or from keywords (see
        :func:`hipgen.client.dataset_spec`). ``request_id`` defaults to a fresh key, sent on every
        retry, so a retried create never starts a second job."""
        if spec is None:
            spec = builders.dataset_spec(**spec_kw)
        elif spec_kw:
            raise TypeError("give a DatasetJobSpec or keywords, not both")
        req = dataset_pb2.CreateDatasetJobRequest(spec=spec, request_id=request_id or new_request_id())
        resp = self._unary(self.dataset_stub.CreateDatasetJob, req, self.policy.timeout(timeout_s))
        return DatasetJob.from_proto(resp.job)

    def get_dataset_job(self, job_id: str, *, timeout_s: float | None = None) -> DatasetJob:
        req = dataset_pb2.GetDatasetJobRequest(job_id=job_id)
        resp = self._unary(self.dataset_stub.GetDatasetJob, req, self.policy.timeout(timeout_s))
        return DatasetJob.from_proto(resp.job)

    def list_dataset_jobs(
        self, *, state: str | int | None = None, page_size: int = 50, timeout_s: float | None = None
    ) -> Iterator[DatasetJob]:
        """Every job (newest first), or every job in ``state``, fetching pages of ``page_size`` as the
        iteration goes (each page with its own deadline)."""
        req = dataset_pb2.ListDatasetJobsRequest(
            page_size=page_size, state_filter=builders.choice(builders.STATES, state, "state_filter")
        )
        timeout = self.policy.timeout(timeout_s)

        def pages() -> Iterator[DatasetJob]:
            while True:
                page = self._unary(self.dataset_stub.ListDatasetJobs, req, timeout)
                yield from (DatasetJob.from_proto(j) for j in page.jobs)
                if not page.next_page_token:
                    return
                req.page_token = page.next_page_token

        return pages()

    def cancel_dataset_job(self, job_id: str, *, timeout_s: float | None = None) -> DatasetJob:
        """Ask a job to stop; returns it CANCELLING (or final, if it had finished: a no-op)."""
        req = dataset_pb2.CancelDatasetJobRequest(job_id=job_id)
        resp = self._unary(self.dataset_stub.CancelDatasetJob, req, self.policy.timeout(timeout_s))
        return DatasetJob.from_proto(resp.job)

    def watch_dataset_job(self, job_id: str, *, timeout_s: float | None = None) -> Iterator[DatasetJob]:
        """The job now, then on every change, until it is final (the iterator then ends)."""
        req = dataset_pb2.WatchDatasetJobRequest(job_id=job_id)
        stream = self._stream(
            self.dataset_stub.WatchDatasetJob, req, self.policy.timeout(timeout_s, long=True), resumable=True
        )
        return (DatasetJob.from_proto(ev.job) for ev in stream)

    def wait_dataset_job(
        self,
        job_id: str,
        *,
        on_update: Callable[[DatasetJob], None] | None = None,
        timeout_s: float | None = None,
    ) -> DatasetJob:
        """Watch a job until it is final and return it (``on_update`` sees every update)."""
        last = None
        for job in self.watch_dataset_job(job_id, timeout_s=timeout_s):
            last = job
            if on_update is not None:
                on_update(job)
        if last is None or not last.done:  # a stream that ended early: ask once more
            last = self.get_dataset_job(job_id)
        return last


__all__ = ["GenerateEvent", "HipgenClient"]
