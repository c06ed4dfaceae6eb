"""The asyncio client (``grpc.aio`` channels): :class:`AsyncHipgenClient`, the same calls as
:class:`~hipgen.client.HipgenClient` as coroutines and async iterators."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

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

GenerateEvent = GenerateProgress | GeneratedImage


class AsyncHipgenClient:
    """The asyncio twin of :class:`~hipgen.client.HipgenClient`: same constructor, deadlines, retries
    and errors; unary calls are coroutines, streams and listings async iterators. Create it inside the
    running event loop (``async with AsyncHipgenClient(target) as c: ...``)."""

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
        self.channel: grpc.aio.Channel = self.config.open_aio()
        self.angle_stub = angle_pb2_grpc.AngleServiceStub(self.channel)
        self.generate_stub = generate_pb2_grpc.GenerateServiceStub(self.channel)
        self.score_stub = score_pb2_grpc.ScoreServiceStub(self.channel)
        self.dataset_stub = dataset_pb2_grpc.DatasetServiceStub(self.channel)

    # -- life cycle --------------------------------------------------------------------------------------
    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncHipgenClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until the channel is connected (raises ``asyncio.TimeoutError`` after ``timeout_s``)."""
        await asyncio.wait_for(self.channel.channel_ready(), timeout_s)

    # -- plumbing ----------------------------------------------------------------------------------------
    async def _unary(
        self, method: Callable[..., Any], request: Any, timeout: float, *, retry: bool = True
    ) -> Any:
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            try:
                return await method(
                    request, timeout=max(deadline - time.monotonic(), 1e-3), metadata=self._metadata
                )
            except grpc.RpcError as err:
                error, delay = self.policy.next_delay(
                    rpc_name(method), err, attempt, deadline - time.monotonic(), retry
                )
                if delay is None:
                    raise error from err
            attempt += 1
            await asyncio.sleep(delay)

    async def _stream(
        self, method: Callable[..., Any], request: Any, timeout: float, *, resumable: bool = False
    ) -> AsyncIterator[Any]:
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            call = method(request, timeout=max(deadline - time.monotonic(), 1e-3), metadata=self._metadata)
            received = False
            try:
                async for message in call:
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
                call.cancel()
            attempt += 1
            await asyncio.sleep(delay)

    # -- AngleService ------------------------------------------------------------------------------------
    async def predict_angle(
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
        resp = await self._unary(self.angle_stub.PredictAngle, req, self.policy.timeout(timeout_s))
        return AngleResult.from_proto(resp)

    # -- GenerateService ---------------------------------------------------------------------------------
    def generate_stream(
        self, conditions: Iterable[builders.Condition], *, timeout_s: float | None = None, **kw: Any
    ) -> AsyncIterator[GenerateEvent]:
        """Progress events and images as the server sends them (keywords as :meth:`generate`)."""
        req = builders.generate_request(conditions, **kw)
        stream = self._stream(self.generate_stub.Generate, req, self.policy.timeout(timeout_s, long=True))

        async def events() -> AsyncIterator[GenerateEvent]:
            async for ev in stream:
                if ev.HasField("progress"):
                    yield GenerateProgress.from_proto(ev.progress)
                elif ev.HasField("image"):
                    yield GeneratedImage.from_proto(ev.image)

        return events()

    async def generate(
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
        """Generate images for requested angle pairs and return them in output order."""
        images = []
        async for ev in self.generate_stream(
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

    async def generate_labeled(
        self,
        conditions: Iterable[builders.Condition],
        *,
        tolerance_deg: float | None = None,
        max_regenerations: int = 0,
        timeout_s: float | None = None,
        **generate_kw: Any,
    ) -> LabeledResult:
        """Generate, measure and keep images within ``tolerance_deg`` (DatasetService.GenerateLabeled)."""
        req = dataset_pb2.GenerateLabeledRequest(
            generate=builders.generate_request(conditions, **generate_kw), max_regenerations=max_regenerations
        )
        if tolerance_deg is not None:
            req.tolerance_deg = tolerance_deg
        resp = await self._unary(
            self.dataset_stub.GenerateLabeled, req, self.policy.timeout(timeout_s, long=True)
        )
        return LabeledResult.from_proto(resp)

    # -- ScoreService ------------------------------------------------------------------------------------
    async def score_sets(
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
        """Score ``candidate`` against ``reference`` (locations the server reads, or inline images)."""
        req = score_pb2.ScoreSetsRequest(
            reference=builders.image_set(reference),
            candidate=builders.image_set(candidate),
            metrics=list(metrics),
            feature_backbone=feature_backbone,
            image_size=image_size,
            seed=seed,
        )
        resp = await self._unary(self.score_stub.ScoreSets, req, self.policy.timeout(timeout_s, long=True))
        return ScoreReport.from_proto(resp)

    # -- DatasetService ----------------------------------------------------------------------------------
    async def create_dataset_job(
        self,
        spec: dataset_pb2.DatasetJobSpec | None = None,
        *,
        request_id: str | None = None,
        timeout_s: float | None = None,
        **spec_kw: Any,
    ) -> DatasetJob:
        """Start a dataset job (a spec or keywords); one idempotency key for all retries."""
        if spec is None:
            spec = builders.dataset_spec(**spec_kw)
        elif spec_kw:
            raise TypeError("give a DatasetJobSpec or keywords, not both")
        req = dataset_pb2.CreateDatasetJobRequest(spec=spec, request_id=request_id or new_request_id())
        resp = await self._unary(self.dataset_stub.CreateDatasetJob, req, self.policy.timeout(timeout_s))
        return DatasetJob.from_proto(resp.job)

    async def get_dataset_job(self, job_id: str, *, timeout_s: float | None = None) -> DatasetJob:
        req = dataset_pb2.GetDatasetJobRequest(job_id=job_id)
        resp = await self._unary(self.dataset_stub.GetDatasetJob, req, self.policy.timeout(timeout_s))
        return DatasetJob.from_proto(resp.job)

    def list_dataset_jobs(
        self, *, state: str | int | None = None, page_size: int = 50, timeout_s: float | None = None
    ) -> AsyncIterator[DatasetJob]:
        """Every job (newest first), or every job in ``state``, page by page."""
        req = dataset_pb2.ListDatasetJobsRequest(
            page_size=page_size, state_filter=builders.choice(builders.STATES, state, "state_filter")
        )
        timeout = self.policy.timeout(timeout_s)

        async def pages() -> AsyncIterator[DatasetJob]:
            while True:
                page = await self._unary(self.dataset_stub.ListDatasetJobs, req, timeout)
                for j in page.jobs:
                    yield DatasetJob.from_proto(j)
                if not page.next_page_token:
                    return
                req.page_token = page.next_page_token

        return pages()

    async def cancel_dataset_job(self, job_id: str, *, timeout_s: float | None = None) -> DatasetJob:
        """Ask a job to stop; returns it CANCELLING (or final, if it had finished)."""
        req = dataset_pb2.CancelDatasetJobRequest(job_id=job_id)
        resp = await self._unary(self.dataset_stub.CancelDatasetJob, req, self.policy.timeout(timeout_s))
        return DatasetJob.from_proto(resp.job)

    def watch_dataset_job(self, job_id: str, *, timeout_s: float | None = None) -> AsyncIterator[DatasetJob]:
        """The job now, then on every change, until it is final."""
        req = dataset_pb2.WatchDatasetJobRequest(job_id=job_id)
        stream = self._stream(
            self.dataset_stub.WatchDatasetJob, req, self.policy.timeout(timeout_s, long=True), resumable=True
        )

        async def jobs() -> AsyncIterator[DatasetJob]:
            async for ev in stream:
                yield DatasetJob.from_proto(ev.job)

        return jobs()

    async def wait_dataset_job(
        self,
        job_id: str,
        *,
        on_update: Callable[[DatasetJob], None] | None = None,
        timeout_s: float | None = None,
    ) -> DatasetJob:
        """Watch a job until it is final and return it."""
        last = None
        async for job in self.watch_dataset_job(job_id, timeout_s=timeout_s):
            last = job
            if on_update is not None:
                on_update(job)
        if last is None or not last.done:
            last = await self.get_dataset_job(job_id)
        return last


__all__ = ["AsyncHipgenClient"]
