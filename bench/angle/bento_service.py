"""BentoML as a baseline deployment of the angle models (issue 10 (e)): the committed ONNX models in
``model_repository/`` behind a BentoML 1.4 service, measured by hipgen's own pipeline — PNG bytes decoded
by :func:`hipgen.data.images.decode_image_bytes`, then :func:`hipgen.angle.measure.measurer_from_backend`
over :class:`hipgen.inference.backend.OrtBackend` — so that what differs from AngleService is only the
serving stack (BentoML's HTTP/JSON and multipart files vs gRPC and protobuf).

It runs in its own venv (``make .venv/.stamps/bento`` makes ``.venv-bento``: bentoml pins many
packages the project must not share) and is started by ``bench/angle/bench_angle.py``::

    .venv-bento/bin/python -m bentoml serve bento_service:AngleBento --working-dir bench/angle \
        --host 127.0.0.1 --port 3000

``HIPGEN_MODEL_REPOSITORY`` names the repository (default: ``model_repository`` at the repository root).

Endpoints (POST, multipart/form-data):

- ``/predict`` — one image (field ``image``) → ``{"na_left", "na_right", "prob_big_left",
  "prob_big_right", "width", "height"}``; like AngleService's PredictAngle, each call is measured alone.
- ``/predict_many`` — several images (repeated field ``images``) → a list of those, measured in one
  batch like AngleService's StreamPredictAngle.
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml

from hipgen.angle.measure import AngleMeasurer, Measurement, measurer_from_backend
from hipgen.data.images import decode_image_bytes
from hipgen.inference.backend import OrtBackend

REPOSITORY = Path(
    os.environ.get("HIPGEN_MODEL_REPOSITORY") or Path(__file__).resolve().parents[2] / "model_repository"
)


def _answer(m: Measurement, shape: tuple[int, ...]) -> dict[str, float | int]:
    return {
        "na_left": float(m.na_left),
        "na_right": float(m.na_right),
        "prob_big_left": float(m.prob_big_left),
        "prob_big_right": float(m.prob_big_right),
        "width": shape[1],
        "height": shape[0],
    }


# One worker process, like one AngleService process; 8 threads for the sync endpoints, like
# AngleService's default gRPC thread pool (HIPGEN_MAX_WORKERS = 8) — BentoML's default is 1, which would
# serialise concurrent requests and make the comparison about configuration rather than the stack.
@bentoml.service(workers=1, threads=8, traffic={"timeout": 300})
class AngleBento:
    def __init__(self) -> None:
        self.measurer: AngleMeasurer = measurer_from_backend(OrtBackend(REPOSITORY))

    def _measure(self, files: list[Path]) -> list[dict[str, float | int]]:
        pixels = [decode_image_bytes(f.read_bytes(), source=f.name).pixels for f in files]
        return [_answer(m, p.shape) for m, p in zip(self.measurer.measure(pixels), pixels, strict=True)]

    @bentoml.api
    def predict(self, image: Path) -> dict[str, float | int]:
        return self._measure([image])[0]

    @bentoml.api
    def predict_many(self, images: list[Path]) -> list[dict[str, float | int]]:
        return self._measure(images)
