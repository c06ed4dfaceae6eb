"""One shard of a dataset job, end to end: plan (from job seed and shard index) → GenerateLabeled through
GenerateService → write with hipgen's format writers → shard record. The local worker pool and the
Kubernetes shard worker (:mod:`services.gateway.worker`) both run exactly this function, so a shard
gives the same files wherever it runs.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TypeVar

import grpc
from prometheus_client import Counter

from hipgen.api.v1 import common_pb2, generate_pb2
from hipgen.client.errors import ClientError
from hipgen.data.images import decode_image_bytes
from hipgen.data.record import LabelRecord, caption
from hipgen.dataset.destination import Destination, DestinationError
from hipgen.dataset.shards import KeptImage, RejectedAttempt, ShardRecord, write_shard
from hipgen.dataset.spec import JobSpec, ShardPlan
from services.angle.servicer import label_from_proto
from services.gateway.labeled import GenerateCall, generate_labeled
from services.generate.servicer import SAMPLER_ENUMS

log = logging.getLogger("services.gateway.shard")

DEFAULT_CHUNK = 32  # images per Generate call (GenerateService caps one call; 32 stays under its default)


def labelled_record(
    image: generate_pb2.GeneratedImage, requested: tuple[float, float], captions: str
) -> LabelRecord:
    """The measured label of a generated image; with ``captions="requested"`` its caption states the
    requested angles instead (what a text-to-image fine-tune conditions on)."""
    record = label_from_proto(image.label)
    return replace(record, text=caption(*requested)) if captions == "requested" else record


def generate_request(spec: JobSpec, plan: ShardPlan, start: int, stop: int) -> generate_pb2.GenerateRequest:
    """Generate call for the plan's images ``start:stop`` (image j of the shard uses ``seed_base + j``)."""
    req = generate_pb2.GenerateRequest(
        conditions=[
            common_pb2.NaCondition(na_left_deg=float(a), na_right_deg=float(b))
            for a, b in plan.angles[start:stop]
        ],
        images_per_condition=1,
        seed=plan.seed_base + start,
        sampler=SAMPLER_ENUMS.get(spec.sampler or "", generate_pb2.SAMPLER_UNSPECIFIED),
        steps=spec.steps,
        model_name=spec.model_name,
        image_size=spec.image_size,
        output_encoding=common_pb2.IMAGE_ENCODING_PNG,
    )
    if spec.guidance_scale is not None:
        req.guidance_scale = spec.guidance_scale
    return req


CANCEL_POLL_S = 0.5  # how often a Generate stream in flight asks whether its job was cancelled


class ShardCancelled(Exception):
    """The job was cancelled while one of the shard's Generate streams was in flight (it was cancelled)."""


def cancellable(
    generate: GenerateCall, cancelled: Callable[[], bool], every_s: float = CANCEL_POLL_S
) -> GenerateCall:
    """``generate`` whose streams ask ``cancelled()`` (a database read) at most every ``every_s`` as their
    events arrive, and cancel the call when it turns true — so GenerateService stops denoising at once
    instead of finishing a call of up to :data:`DEFAULT_CHUNK` images (minutes of DDPM-1000) for a
    job nobody wants any more. Raises :class:`ShardCancelled` in the consumer."""

    def call(request: generate_pb2.GenerateRequest) -> Iterator[generate_pb2.GenerateResponse]:
        stream = generate(request)
        last = time.monotonic()
        for event in stream:  # type: ignore[attr-defined]
            if time.monotonic() - last >= every_s:
                last = time.monotonic()
                if cancelled():
                    stream.cancel()  # type: ignore[attr-defined]
                    raise ShardCancelled()
            yield event

    return call


def run_shard(
    spec: JobSpec,
    shard: int,
    generate: GenerateCall,
    dest: Destination,
    *,
    chunk: int = DEFAULT_CHUNK,
    cancelled: Callable[[], bool] = lambda: False,
) -> ShardRecord | None:
    """Make and write one shard; None when ``cancelled`` turned true before it was written (nothing of
    it is recorded then, and a later run starts it again)."""
    plan = spec.shard_plan(shard)
    kept: list[KeptImage] = []
    rejected: list[RejectedAttempt] = []
    generate = cancellable(generate, cancelled)
    for start in range(0, len(plan.indices), chunk):
        if cancelled():
            return None
        stop = min(start + chunk, len(plan.indices))
        try:
            resp = generate_labeled(
                generate,
                generate_request(spec, plan, start, stop),
                tolerance_deg=spec.tolerance_deg,
                max_regenerations=spec.max_regenerations,
            )
        except ShardCancelled:
            return None
        for j, item in zip(range(start, stop), resp.images, strict=True):
            img = item.image
            left, right = float(plan.angles[j][0]), float(plan.angles[j][1])
            record = labelled_record(img, (left, right), spec.labels)
            pixels = decode_image_bytes(img.image.data, source=f"shard {shard} image {j}").pixels
            kept.append(
                KeptImage(
                    plan.indices[j],
                    record,
                    pixels,
                    (left, right),
                    plan.splits[j],
                    item.attempts,
                    item.within_tolerance,
                )
            )
        for r in resp.rejected:  # r.index: its image's position in this call
            rejected.append(
                RejectedAttempt(
                    plan.indices[start + r.index],
                    r.seed,
                    (r.requested.na_left_deg, r.requested.na_right_deg),
                    (r.label.na_left, r.label.na_right),
                )
            )
    if cancelled():
        return None
    return write_shard(dest, spec, shard, kept, rejected)


RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
SHARD_RETRIES = Counter(
    "hipgen_dataset_shard_retries",
    "Shards (and destination reads/writes) retried after a transient error: the gRPC code, or the errno "
    "name of a storage error (ENOSPC, EREMOTEIO for S3's 5xx, ...).",
    ["code"],
)

T = TypeVar("T")


def _sleep(delay_s: float) -> bool:
    time.sleep(delay_s)
    return False


def retry_code(e: BaseException) -> str | None:
    """Why ``e`` is worth another try — its gRPC code (GenerateService restarting, scaling, overloaded) or
    its errno name (the destination: a full disk, S3 answering 5xx after botocore's own retries) — or
    None when it is not (a bad request, a bug)."""
    if isinstance(e, grpc.RpcError):
        code = e.code()
        return code.name if code in RETRYABLE else None
    if isinstance(e, (DestinationError, PermissionError, FileNotFoundError)):
        return None  # misconfigured, forbidden, or gone (S3: 403, 404): another try cannot help
    if isinstance(e, OSError):
        return errno.errorcode.get(e.errno or 0, type(e).__name__)
    return None


MAX_BACKOFF_S = 30.0  # with the default 8 retries: about 2 minutes for a pod (or Triton) to come back


def backoff_s(e: BaseException, attempt: int, base_delay_s: float) -> float:
    """Seconds to wait before retry ``attempt + 1``: exponential (``base_delay_s · 2^attempt``, at most
    :data:`MAX_BACKOFF_S`), and never shorter than a server's ``RetryInfo`` asks (an overloaded
    GenerateService says when a slot is likely free; retrying sooner only adds to the queue it refused)."""
    delay = min(MAX_BACKOFF_S, base_delay_s * 2**attempt)
    if isinstance(e, grpc.RpcError):
        advised = ClientError.from_rpc_error(e).retry_after_s
        if advised is not None:
            delay = max(delay, min(advised, MAX_BACKOFF_S))
    return delay


class RetryStopped(Exception):
    """:func:`retrying` gave up between two attempts because ``wait`` said so (stopping, cancelled)."""


def retrying(
    fn: Callable[[], T],
    *,
    retries: int,
    base_delay_s: float = 1.0,
    wait: Callable[[float], bool] = _sleep,
    what: str = "destination",
    extra: dict[str, object] | None = None,
) -> T:
    """``fn()``, run again with exponential backoff (:func:`backoff_s`) while it raises a
    transient error (:func:`retry_code`); other errors and the last failure raise. ``wait(delay)``
    returning True (the runner is stopping, the job was cancelled) raises :class:`RetryStopped`."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except (grpc.RpcError, OSError) as e:
            code = retry_code(e)
            if code is None or attempt == retries:
                raise
            SHARD_RETRIES.labels(code).inc()
            delay = backoff_s(e, attempt, base_delay_s)
            log.warning(
                f"{what} failed; retrying",
                extra={**(extra or {}), "code": code, "error": str(e)[:300], "retry_in_s": delay},
            )
            if wait(delay):
                raise RetryStopped() from e
    raise AssertionError("unreachable")  # the last attempt returned or raised


def run_shard_retrying(
    spec: JobSpec,
    shard: int,
    generate: Callable[[], GenerateCall],
    dest: Destination,
    *,
    retries: int,
    base_delay_s: float = 1.0,
    wait: Callable[[float], bool] = _sleep,
    cancelled: Callable[[], bool] = lambda: False,
) -> ShardRecord | None:
    """:func:`run_shard`, run again with exponential backoff while GenerateService answers a transient
    error (restarting, scaling, overloaded) or writing the destination fails (a full disk, S3 5xx: a
    re-run writes the same files over whatever the failed one left); other errors and the last failure
    raise. ``wait(delay)`` returning True (the runner is stopping) or ``cancelled()`` gives up with None.
    The local runner and the Kubernetes shard worker both retry through this."""
    try:
        return retrying(
            lambda: run_shard(spec, shard, generate(), dest, cancelled=cancelled),
            retries=retries,
            base_delay_s=base_delay_s,
            wait=lambda delay: wait(delay) or cancelled(),
            what="shard",
            extra={"shard": shard},
        )
    except RetryStopped:
        return None


__all__ = [
    "CANCEL_POLL_S",
    "DEFAULT_CHUNK",
    "RETRYABLE",
    "MAX_BACKOFF_S",
    "RetryStopped",
    "ShardCancelled",
    "backoff_s",
    "cancellable",
    "generate_request",
    "labelled_record",
    "retry_code",
    "retrying",
    "run_shard",
    "run_shard_retrying",
]
