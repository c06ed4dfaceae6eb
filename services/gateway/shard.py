"""One shard of a dataset job, end to end: plan (from job seed and shard index) → GenerateLabeled through
GenerateService → write with hipgen's format writers → shard record. The local worker pool and the
Kubernetes shard worker (:mod:`services.gateway.worker`) both run exactly this function, so a shard
gives the same files wherever it runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import grpc
from prometheus_client import Counter

from hipgen.api.v1 import common_pb2, generate_pb2
from hipgen.data.images import decode_image_bytes
from hipgen.data.record import LabelRecord, caption
from hipgen.dataset.destination import Destination
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
    for start in range(0, len(plan.indices), chunk):
        if cancelled():
            return None
        stop = min(start + chunk, len(plan.indices))
        resp = generate_labeled(
            generate,
            generate_request(spec, plan, start, stop),
            tolerance_deg=spec.tolerance_deg,
            max_regenerations=spec.max_regenerations,
        )
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
SHARD_RETRIES = Counter("hipgen_dataset_shard_retries", "Shards retried after a transient error.", ["code"])


def _sleep(delay_s: float) -> bool:
    time.sleep(delay_s)
    return False


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
    error (restarting, scaling, overloaded); other errors and the last failure raise. ``wait(delay)``
    returning True (the runner is stopping) or ``cancelled()`` gives up with None. The local runner
    and the Kubernetes shard worker both retry through this."""
    for attempt in range(retries + 1):
        try:
            return run_shard(spec, shard, generate(), dest, cancelled=cancelled)
        except grpc.RpcError as e:
            code = e.code()
            if code not in RETRYABLE or attempt == retries:
                raise
            SHARD_RETRIES.labels(code.name).inc()
            delay = base_delay_s * 2**attempt
            log.warning(
                "shard failed; retrying", extra={"shard": shard, "code": code.name, "retry_in_s": delay}
            )
            if wait(delay) or cancelled():
                return None
    return None


__all__ = [
    "DEFAULT_CHUNK",
    "RETRYABLE",
    "generate_request",
    "labelled_record",
    "run_shard",
    "run_shard_retrying",
]
