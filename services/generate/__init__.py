"""GenerateService (DESIGN §3): synthetic radiographs at requested Norberg angles, streamed with
progress and auto-labelled, on any :class:`Backend`."""

from services.generate.servicer import IMAGES_GENERATED, STEP_SECONDS, GenerateJob, GenerateServicer

__all__ = ["IMAGES_GENERATED", "STEP_SECONDS", "GenerateJob", "GenerateServicer"]
