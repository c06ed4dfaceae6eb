"""The review app's only way to the model services: the gateway, over gRPC, with its own scoped token
(``datasets`` to find a job's output, ``measure`` for model confidences). The browser never calls a
model service; it calls this app, which calls the gateway."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse
from urllib.request import url2pathname

from hipgen.client import ClientError, HipgenClient
from hipgen.client.types import DatasetJob

if TYPE_CHECKING:
    from services.review.store import ReviewStore

log = logging.getLogger("services.review")


class JobNotReviewable(ValueError):
    """A job the app cannot open: not finished, or written somewhere this machine cannot write."""


def local_output(job: DatasetJob) -> Path:
    """The folder of a finished job's ``file://`` output."""
    if job.state != "SUCCEEDED":
        raise JobNotReviewable(
            f"job {job.job_id} is {job.state}; only finished (SUCCEEDED) jobs are reviewed"
        )
    uri = urlparse(job.output_uri)
    if uri.scheme != "file":
        raise JobNotReviewable(
            f"job {job.job_id} was written to {job.output_uri}: review needs a file:// output on this machine"
        )
    return Path(url2pathname(uri.path))


@dataclass
class GatewayLink:
    address: str
    token_file: Path | None = None
    ca_file: Path | None = None
    _client: HipgenClient | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    measuring: dict[str, tuple[int, int]] = field(default_factory=dict, init=False)  # job -> (done, total)

    def client(self) -> HipgenClient:
        with self._lock:
            if self._client is None:
                token = self.token_file.read_text().strip() if self.token_file else None
                self._client = HipgenClient(
                    self.address, token=token, tls=self.ca_file is not None, ca_file=self.ca_file, retries=2
                )
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def jobs(self) -> list[DatasetJob]:
        return list(self.client().list_dataset_jobs(page_size=100))

    def job(self, job_id: str) -> DatasetJob:
        return self.client().get_dataset_job(job_id)

    def measure_confidences(self, job_id: str, images: list[tuple[str, bytes]], store: ReviewStore) -> None:
        """Measure every image through AngleService (via the gateway) and keep the classifier's
        probabilities: the model's confidence a reviewer can filter on. Runs in a background thread;
        ``measuring[job_id]`` says how far it is."""
        total = len(images)  # the caller has set measuring[job_id], claiming the job before it started us
        try:
            for i, (key, data) in enumerate(images):
                r = self.client().predict_angle(data)
                store.put_confidences(
                    job_id,
                    [(key, r.probability_big_left, r.probability_big_right)],
                    f"{r.model_name}:{r.model_version}",
                )
                self.measuring[job_id] = (i + 1, total)
        except ClientError as e:
            log.warning("measuring job %s through the gateway failed: %s", job_id, e)
        finally:
            self.measuring.pop(job_id, None)
