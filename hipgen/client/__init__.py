"""A typed Python client for the hipgen gateway (Angle, Generate, Score and Dataset services) or any
single hipgen service::

    from hipgen.client import HipgenClient

    with HipgenClient("127.0.0.1:50051", token=token) as c:
        result = c.predict_angle("study.png")                 # AngleResult: na_left_deg, class_left, ...
        images = c.generate([(100, 95)], seed=7, sampler="lcm")
        job = c.create_dataset_job(output_uri="runs/ds", count=32, na_range=(80, 115), sampler="lcm")
        final = c.wait_dataset_job(job.job_id)

:class:`AsyncHipgenClient` has the same calls for asyncio. Every call has a deadline; calls that are safe
to repeat are retried on UNAVAILABLE and (honouring ``RetryInfo``) RESOURCE_EXHAUSTED; failures raise
:class:`ClientError` with the bad fields named. Deliberately free of ``services`` (the server side) and
of torch: a client installation needs grpcio, grpcio-status and the generated stubs only.
"""

from hipgen.client.aio import AsyncHipgenClient
from hipgen.client.builders import angle_distribution, dataset_spec, to_uri
from hipgen.client.errors import ClientError, RetryPolicy
from hipgen.client.sync import HipgenClient
from hipgen.client.types import (
    FINAL_STATES,
    AngleFidelity,
    AngleResult,
    DatasetFidelity,
    DatasetJob,
    GeneratedImage,
    GenerateProgress,
    JobProgress,
    LabeledImage,
    LabeledResult,
    Metric,
    ScoreReport,
)

__all__ = [
    "FINAL_STATES",
    "AngleFidelity",
    "AngleResult",
    "AsyncHipgenClient",
    "ClientError",
    "DatasetFidelity",
    "DatasetJob",
    "GenerateProgress",
    "GeneratedImage",
    "HipgenClient",
    "JobProgress",
    "LabeledImage",
    "LabeledResult",
    "Metric",
    "RetryPolicy",
    "ScoreReport",
    "angle_distribution",
    "dataset_spec",
    "to_uri",
]
