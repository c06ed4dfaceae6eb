"""One shard of a dataset job, end to end: plan (from job seed and shard index) → GenerateLabeled through
GenerateService → write with hipgen's format writers → shard record. The local worker pool and the
Kubernetes shard worker (:mod:`services.gateway.worker`) both run exactly this function, so a shard
gives the same files wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from hipgen.api.v1 import common_pb2, generate_pb2
from hipgen.data.images import decode_image_bytes
from hipgen.data.record import LabelRecord, caption
from hipgen.dataset.destination import Destination
from hipgen.dataset.shards import KeptImage, RejectedAttempt, ShardRecord, write_shard
from hipgen.dataset.spec import JobSpec, ShardPlan
from services.angle.servicer import label_from_proto
from services.gateway.labeled import GenerateCall, generate_labeled

SAMPLER_ENUMS = {
    "ddpm": generate_pb2.SAMPLER_DDPM,
    "ddim": generate_pb2.SAMPLER_DDIM,
    "lcm": generate_pb2.SAMPLER_LCM,
}
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


__all__ = ["DEFAULT_CHUNK", "generate_request", "labelled_record", "run_shard"]
