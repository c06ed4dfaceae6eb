"""GenerateLabeled: generate → measure (auto-label) → optional tolerance filter with a regeneration budget.

GenerateService already labels every image by measuring it with the angle model (its label is never the
request), so the gateway does not measure twice: it reads that label, compares it with the request and
regenerates the misses. Seeds stay reproducible: the first attempt of image k uses ``seed + k`` (as
Generate does); regeneration round r (1-based) asks again for the images still missing, the j-th of them
with ``seed + r·N + j`` (N = images requested), seeds no first attempt uses. After the last round the
closest attempt is kept and marked out of tolerance; every rejected attempt is returned for review.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from hipgen.api.v1 import common_pb2, dataset_pb2, generate_pb2

GenerateCall = Callable[[generate_pb2.GenerateRequest], object]  # a stub's Generate (returns a stream)


def _errors(img: generate_pb2.GeneratedImage) -> tuple[float, float]:
    return (
        img.label.na_left - img.requested.na_left_deg,
        img.label.na_right - img.requested.na_right_deg,
    )


def _miss(err: tuple[float, float]) -> float:
    """How far an image is from its request: the worse side, infinite when not measurable."""
    worst = max(abs(err[0]), abs(err[1]))
    return worst if math.isfinite(worst) else math.inf


@dataclass
class _Slot:
    best: generate_pb2.GeneratedImage | None = None
    attempts: int = 0


def collect_images(stream: object) -> list[generate_pb2.GeneratedImage]:
    """The images of one Generate stream, in output order (progress events are skipped)."""
    out = [ev.image for ev in stream if ev.HasField("image")]  # type: ignore[attr-defined]
    return sorted(out, key=lambda im: im.index)


class ShortStreamError(RuntimeError):
    """GenerateService ended a stream with fewer images than asked for (it restarted, or a bug)."""


def expect(images: list[generate_pb2.GeneratedImage], n: int) -> list[generate_pb2.GeneratedImage]:
    if len(images) != n:
        raise ShortStreamError(f"GenerateService returned {len(images)} of {n} images")
    return images


def generate_labeled(
    generate: GenerateCall,
    request: generate_pb2.GenerateRequest,
    *,
    tolerance_deg: float | None,
    max_regenerations: int,
) -> dataset_pb2.GenerateLabeledResponse:
    """Run the composition through ``generate`` (a GenerateService stub's ``Generate``, already bound to
    deadline and credentials). Raises ``grpc.RpcError`` from GenerateService unchanged."""
    req = generate_pb2.GenerateRequest()
    req.CopyFrom(request)
    if not req.HasField("seed"):
        req.seed = secrets.randbits(62)  # drawn here so regenerations can follow from it
    per = req.images_per_condition or 1
    requested = [c for c in req.conditions for _ in range(per)]
    n = len(requested)
    slots = [_Slot() for _ in range(n)]
    rejected: list[generate_pb2.GeneratedImage] = []

    def offer(k: int, img: generate_pb2.GeneratedImage) -> bool:
        """Record one attempt for slot k; True when it is within tolerance (then it is kept)."""
        slot = slots[k]
        slot.attempts += 1
        img.index = k
        ok = tolerance_deg is None or _miss(_errors(img)) <= tolerance_deg
        if slot.best is None or _miss(_errors(img)) < _miss(_errors(slot.best)):
            if slot.best is not None:
                rejected.append(slot.best)
            slot.best = img
        else:
            rejected.append(img)
        return ok

    missing = [k for k, img in enumerate(expect(collect_images(generate(req)), n)) if not offer(k, img)]
    for rnd in range(1, max_regenerations + 1):
        if not missing:
            break
        again = generate_pb2.GenerateRequest()
        again.CopyFrom(req)
        del again.conditions[:]
        again.conditions.extend(
            common_pb2.NaCondition(
                na_left_deg=requested[k].na_left_deg, na_right_deg=requested[k].na_right_deg
            )
            for k in missing
        )
        again.images_per_condition = 1
        again.seed = (req.seed + rnd * n) % 2**64  # uint64, as GenerateService wraps seed + k
        images = expect(collect_images(generate(again)), len(missing))
        missing = [k for k, img in zip(missing, images, strict=True) if not offer(k, img)]

    resp = dataset_pb2.GenerateLabeledResponse()
    for k, slot in enumerate(slots):
        assert slot.best is not None  # every slot had a first attempt
        err = _errors(slot.best)
        resp.images.add(
            image=slot.best,
            attempts=slot.attempts,
            within_tolerance=tolerance_deg is None or _miss(err) <= tolerance_deg,
            error_left_deg=err[0],
            error_right_deg=err[1],
        ).image.index = k
    if tolerance_deg is not None:
        resp.rejected.extend(rejected)
    return resp


__all__ = ["ShortStreamError", "collect_images", "generate_labeled"]
