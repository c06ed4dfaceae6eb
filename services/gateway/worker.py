"""The shard worker of a Kubernetes Indexed Job: ``python -m services.gateway.worker``.

Environment (the gateway's Job object sets it; see :mod:`services.gateway.kube`):

- ``JOB_COMPLETION_INDEX`` — set by the Job controller; this pod runs shards
  ``[index·k, index·k + k)`` with k = ``HIPGEN_SHARDS_PER_POD`` (default 1);
- ``HIPGEN_JOB_SPEC`` — the job's :class:`hipgen.dataset.spec.JobSpec` as JSON;
- ``HIPGEN_GENERATE_ADDRESS`` (and the other ``HIPGEN_*`` settings: token file, CA file).

A shard already recorded in the destination is skipped, so a retried pod redoes only what its
predecessor had not finished. Exit status: 0 when every shard of the index is recorded, 1 on a
failure of GenerateService or of the destination after the retries (Kubernetes then retries this
index), 2 on a bad environment (retrying cannot help).
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import grpc

from hipgen.api.v1 import generate_pb2_grpc
from hipgen.dataset.destination import Destination
from hipgen.dataset.shards import read_shard_record
from hipgen.dataset.spec import JobSpec
from hipgen.logs import configure_logging
from hipgen.settings import get_settings
from services.gateway.server import GENERATE_TIMEOUT_S, downstream_channel
from services.gateway.shard import run_shard_retrying

log = logging.getLogger("services.gateway.worker")


def shards_of(index: int, per_pod: int, shard_count: int) -> range:
    """The shards completion ``index`` runs."""
    return range(index * per_pod, min((index + 1) * per_pod, shard_count))


def main() -> int:
    settings = get_settings()
    configure_logging(settings)
    try:
        index = int(os.environ["JOB_COMPLETION_INDEX"])
        per_pod = int(os.environ.get("HIPGEN_SHARDS_PER_POD", "1"))
        spec = JobSpec.from_json(os.environ["HIPGEN_JOB_SPEC"])
        if index < 0 or per_pod < 1:
            raise ValueError("JOB_COMPLETION_INDEX must be ≥ 0 and HIPGEN_SHARDS_PER_POD ≥ 1")
    except (KeyError, ValueError, TypeError) as e:
        log.error("bad worker environment", extra={"error": f"{type(e).__name__}: {e}"})
        return 2
    shards = shards_of(index, per_pod, spec.shard_count)
    dest = Destination(spec.output_uri)
    with downstream_channel(settings, settings.generate_address) as channel:
        generate = functools.partial(
            generate_pb2_grpc.GenerateServiceStub(channel).Generate, timeout=GENERATE_TIMEOUT_S
        )
        for shard in shards:
            try:
                if read_shard_record(dest, shard) is not None:
                    log.info("shard already written", extra={"shard": shard})
                    continue
                rec = run_shard_retrying(
                    spec, shard, lambda: generate, dest, retries=settings.dataset_shard_retries
                )
            except grpc.RpcError as e:
                log.error("shard failed", extra={"shard": shard, "code": e.code().name})
                return 1
            except OSError as e:  # the destination (a full disk, S3 down) after the retries
                log.error("shard failed", extra={"shard": shard, "code": "STORAGE", "error": str(e)[:300]})
                return 1
            log.info("shard written", extra={"shard": shard, "images": rec.images if rec else 0})
    log.info("index done", extra={"index": index, "shards": [shards.start, shards.stop]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
