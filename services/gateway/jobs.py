"""Running dataset jobs: admission (a bounded queue), the local shard pool or a Kubernetes Indexed Job,
progress, cancellation, finalising the manifest, scoring, and resuming after a restart.

Truth lives in two places that never disagree for long: the job row (:mod:`services.gateway.store`)
says what the client sees; the shard records in the destination say what is written. On start the
runner re-queues every job the database says was QUEUED, RUNNING or CANCELLING, and a resumed job
skips the shards that already have a record — so killing the gateway mid-job loses at most the shards
in flight, which are re-run with the same seeds.

A transient error — GenerateService restarting or overloaded, a full disk, S3 answering 5xx — is retried
with exponential backoff (``dataset_shard_retries`` times: a shard is re-run whole, a manifest rewritten)
before the job fails — with GenerateService's code, or UNAVAILABLE for the destination — and a message
naming the cause.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import grpc
from prometheus_client import Counter, Gauge, Histogram

from hipgen import __version__
from hipgen.dataset.destination import Destination
from hipgen.dataset.shards import (
    FinalResult,
    ShardRecord,
    attach_file,
    finalize,
    finished_manifest,
    read_shard_record,
)
from hipgen.dataset.spec import JobSpec
from services.gateway.kube import KubernetesExecutor
from services.gateway.labeled import GenerateCall
from services.gateway.shard import retrying, run_shard_retrying
from services.gateway.store import ACTIVE, CANCELLED, CANCELLING, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore

log = logging.getLogger("services.gateway.jobs")
T = TypeVar("T")

SCORE_REPORT = "score/report.json"

JOBS = Gauge("hipgen_dataset_jobs", "Dataset jobs on this gateway by state.", ["state"])
QUEUE_DEPTH = Gauge("hipgen_dataset_queue_depth", "Dataset jobs waiting for a runner.")
IMAGES_WRITTEN = Counter("hipgen_dataset_images_written", "Images written by dataset jobs (all shards).")
IMAGES_REJECTED = Counter(
    "hipgen_dataset_images_rejected", "Generated images rejected by a tolerance filter."
)
SHARD_SECONDS = Histogram(
    "hipgen_dataset_shard_seconds",
    "Seconds to generate, label and write one shard.",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
JOB_PROGRESS = Gauge(
    "hipgen_dataset_job_progress", "Fraction of a running dataset job's images written.", ["job_id"]
)


class QueueFullError(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__("the dataset-job queue is full")
        self.retry_after_s = retry_after_s


class Cancelled(Exception):
    pass


@dataclass
class _Progress:
    images_done: int = 0
    bytes_written: int = 0
    images_rejected: int = 0
    out_of_tolerance: int = 0
    shards_done: int = 0
    shards: set[int] = field(default_factory=set)

    def add(self, rec: ShardRecord) -> None:
        self.shards.add(rec.shard)
        self.images_done += rec.images
        self.bytes_written += rec.bytes
        self.images_rejected += rec.rejected
        self.out_of_tolerance += rec.out_of_tolerance
        self.shards_done += 1


@dataclass(frozen=True)
class RunnerConfig:
    max_running: int = 2
    max_queued: int = 16
    shard_workers: int = 2
    shard_retries: int = 4
    retry_base_s: float = 1.0
    kube_poll_s: float = 5.0


class JobRunner:
    """Runs jobs from ``store`` on ``max_running`` threads. ``generate()`` gives a GenerateService call
    (bound to credentials and deadline); ``score(request)`` calls ScoreService.ScoreSets (or None)."""

    def __init__(
        self,
        store: JobStore,
        config: RunnerConfig,
        *,
        generate: Callable[[], GenerateCall],
        score: Callable[[Any], Any] | None = None,
        kube: KubernetesExecutor | None = None,
    ) -> None:
        self.store, self.config = store, config
        self.generate, self.score, self.kube = generate, score, kube
        self._queue: queue.Queue[str] = queue.Queue()
        self._queued: set[str] = set()  # ids in the queue or running: a job is never run twice at once
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Re-queue what a previous run left active (oldest first), then start the runner threads."""
        for row in self.store.in_states(ACTIVE):
            log.info("resuming dataset job", extra={"job_id": row.job_id, "state": row.state})
            self.submit(row.job_id)
        self._refresh_gauges()
        for i in range(self.config.max_running):
            t = threading.Thread(target=self._loop, name=f"dataset-runner-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work; shards in flight finish or are abandoned (they re-run on the next start)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    # -- admission -----------------------------------------------------------------------------------
    def admit(self) -> None:
        """Raise :class:`QueueFullError` when running + queued jobs are at the limit."""
        active = self.store.count(ACTIVE)
        if active >= self.config.max_running + self.config.max_queued:
            # a guess the client can act on: about one shard-time per job ahead of it
            raise QueueFullError(retry_after_s=30.0)

    def submit(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._queued:
                return
            self._queued.add(job_id)
        self._queue.put(job_id)
        self._refresh_gauges()

    def cancel(self, job_id: str) -> None:
        """QUEUED or RUNNING → CANCELLING; the runner stops it after the shards in flight."""
        self.store.update(job_id, only_if_state=(QUEUED, RUNNING), state=CANCELLING)
        self._refresh_gauges()

    def _cancelled(self, job_id: str) -> bool:
        row = self.store.get(job_id)
        return self._stop.is_set() or row is None or row.state == CANCELLING

    def _refresh_gauges(self) -> None:
        for state in (QUEUED, RUNNING, CANCELLING):
            JOBS.labels(state).set(self.store.count((state,)))
        QUEUE_DEPTH.set(self._queue.qsize())

    # -- running ---------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._run(job_id)
            except Exception:  # a bug or a database outage must not kill the runner thread
                log.exception("dataset job crashed", extra={"job_id": job_id})
                if not self._stop.is_set():  # stopping: the job stays active and resumes on restart
                    try:
                        self.store.update(
                            job_id,
                            only_if_state=ACTIVE,
                            state=FAILED,
                            end_time=time.time(),
                            error_code=grpc.StatusCode.INTERNAL.value[0],
                            error_message="internal error (the gateway log has the details)",
                        )
                    except Exception:  # the database itself is down: retry the job after a pause
                        log.exception("cannot record the failure; re-queueing", extra={"job_id": job_id})
                        self._stop.wait(5.0)
                        with self._lock:
                            self._queued.discard(job_id)
                        self.submit(job_id)
                        continue
            finally:
                with self._lock:
                    self._queued.discard(job_id)
                with contextlib.suppress(KeyError):  # the job never saved progress
                    JOB_PROGRESS.remove(job_id)
                with contextlib.suppress(Exception):
                    self._refresh_gauges()

    def _run(self, job_id: str) -> None:
        row = self.store.get(job_id)
        if row is None or row.state not in ACTIVE:
            return
        spec = JobSpec.from_json(row.spec_json)
        dest = Destination(spec.output_uri)
        if row.state == CANCELLING:
            self._finish_cancel(job_id, spec, dest)
            return
        claimed = self.store.update(
            job_id, only_if_state=(QUEUED, RUNNING), state=RUNNING, start_time=row.start_time or time.time()
        )
        if claimed is None:  # cancelled (or finished) between the read and the claim
            current = self.store.get(job_id)
            if current is not None and current.state == CANCELLING:
                self._finish_cancel(job_id, spec, dest)
            return
        try:
            # killed after the manifest, before SUCCEEDED: never redo it
            if self._storage(lambda: finished_manifest(dest, job_id), "reading the manifest", job_id):
                self._succeed(job_id, spec, dest)
                return
            done = self._storage(lambda: self._recorded(spec, dest), "reading the shard records", job_id)
            todo = [s for s in range(spec.shard_count) if s not in done.shards]
            self._save_progress(job_id, spec, done)
            self._storage(dest.sweep_temp_files, "removing temp files", job_id)
            if spec.executor == "kubernetes":
                self._run_kubernetes(job_id, spec, dest, done)
            else:
                self._run_local(job_id, spec, dest, todo, done)
            self._succeed(job_id, spec, dest)
        except Exception as e:
            if self._stop.is_set():
                return  # the gateway is stopping: the job stays RUNNING and resumes on the next start
            if not isinstance(e, Cancelled):
                self._handle_failure(job_id, spec, e)
                return
            self._finish_cancel(job_id, spec, dest)

    def _storage(self, fn: Callable[[], T], what: str, job_id: str) -> T:
        """A read or write of the destination outside the shards, retried like a shard (same budget and
        backoff) while it fails transiently: a full disk, S3 answering 5xx."""
        return retrying(
            fn,
            retries=self.config.shard_retries,
            base_delay_s=self.config.retry_base_s,
            wait=self._stop.wait,
            what=what,
            extra={"job_id": job_id},
        )

    @staticmethod
    def _recorded(spec: JobSpec, dest: Destination) -> _Progress:
        """The shards with a record in the destination, added up."""
        done = _Progress()
        for s in range(spec.shard_count):
            rec = read_shard_record(dest, s)
            if rec is not None:
                done.add(rec)
        return done

    def _handle_failure(self, job_id: str, spec: JobSpec, e: Exception) -> None:
        """A job that cannot go on: FAILED with the code and a one-line reason; anything unexpected is
        re-raised (the loop logs it and answers INTERNAL)."""
        if isinstance(e, grpc.RpcError):
            self._fail(job_id, e.code(), f"GenerateService failed: {e.details()}")
        elif isinstance(e, OSError):
            self._fail(job_id, grpc.StatusCode.UNAVAILABLE, f"writing {spec.output_uri} failed: {e}")
        elif isinstance(e, ShardFailedError):
            self._fail(job_id, grpc.StatusCode.ABORTED, str(e))
        else:
            raise e

    def _succeed(self, job_id: str, spec: JobSpec, dest: Destination) -> None:
        """Manifest (idempotent), score, then SUCCEEDED — or CANCELLED, with the complete manifest, when a
        cancel came in meanwhile."""
        result = self._storage(
            lambda: finalize(dest, spec, provenance(job_id, spec)), "writing the manifest", job_id
        )
        changes: dict[str, Any] = {
            "manifest_uri": dest.uri_of("manifest.json"),
            "fidelity_json": json.dumps(asdict(result.fidelity)) if result.fidelity else "",
        }
        if spec.reference_uri and self.score is not None and not self._cancelled(job_id):
            changes["score_report_uri"] = self._score(job_id, spec, dest)
        if self._stop.is_set():
            return  # resumes on the next start: the manifest is there, so only scoring is redone
        done = self.store.update(
            job_id, only_if_state=(RUNNING,), state=SUCCEEDED, end_time=time.time(), **changes
        )
        if done is None:  # cancelled while finishing: the data set is complete all the same
            self.store.update(
                job_id, only_if_state=(CANCELLING,), state=CANCELLED, end_time=time.time(), **changes
            )
        log.info(
            "dataset job finished",
            extra={"job_id": job_id, "images": spec.count, "rejected": result.rejected},
        )

    def _run_local(
        self, job_id: str, spec: JobSpec, dest: Destination, todo: list[int], done: _Progress
    ) -> None:
        cancelled = lambda: self._cancelled(job_id)  # noqa: E731
        with ThreadPoolExecutor(self.config.shard_workers, thread_name_prefix=f"shard-{job_id[:8]}") as pool:
            pending: set[Future[ShardRecord | None]] = set()
            shards = iter(todo)
            failure: BaseException | None = None
            while True:
                while failure is None and len(pending) < self.config.shard_workers and not cancelled():
                    s = next(shards, None)
                    if s is None:
                        break
                    pending.add(pool.submit(self._shard_with_retries, spec, s, dest, cancelled))
                if not pending:
                    break
                finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for f in finished:
                    try:
                        rec = f.result()
                    except BaseException as e:  # the first failure stops new shards; the rest finish
                        failure = failure or e
                        continue
                    if rec is not None:
                        done.add(rec)
                        IMAGES_WRITTEN.inc(rec.images)
                        IMAGES_REJECTED.inc(rec.rejected)
                        self._save_progress(job_id, spec, done)
            if failure is not None:
                raise failure
        if done.shards_done < spec.shard_count:
            raise Cancelled()

    def _shard_with_retries(
        self, spec: JobSpec, shard: int, dest: Destination, cancelled: Callable[[], bool]
    ) -> ShardRecord | None:
        t0 = time.monotonic()
        rec = run_shard_retrying(
            spec,
            shard,
            self.generate,
            dest,
            retries=self.config.shard_retries,
            base_delay_s=self.config.retry_base_s,
            wait=self._stop.wait,
            cancelled=cancelled,
        )
        if rec is not None:
            SHARD_SECONDS.observe(time.monotonic() - t0)
        return rec

    def _run_kubernetes(self, job_id: str, spec: JobSpec, dest: Destination, done: _Progress) -> None:
        if self.kube is None:
            raise ShardFailedError("this gateway has no Kubernetes executor configured")
        name = self.kube.submit(job_id, spec)
        self.store.update(job_id, kubernetes_job_name=name)
        while True:
            if self._cancelled(job_id):
                raise Cancelled()  # _finish_cancel deletes the Job (not when the gateway is only stopping)
            status = self.kube.status(name)
            progress = self._storage(lambda: self._recorded(spec, dest), "reading the shard records", job_id)
            self._save_progress(job_id, spec, progress)
            if status.failed_reason:
                raise ShardFailedError(f"Kubernetes Job {name} failed: {status.failed_reason}")
            if status.complete:
                if progress.shards_done < spec.shard_count:  # the pods wrote somewhere the gateway cannot see
                    raise ShardFailedError(
                        f"Kubernetes Job {name} completed but only {progress.shards_done} of "
                        f"{spec.shard_count} shard records are in {spec.output_uri}"
                    )
                done.__dict__.update(progress.__dict__)
                return
            self._stop.wait(self.config.kube_poll_s)

    def _save_progress(self, job_id: str, spec: JobSpec, p: _Progress) -> None:
        self.store.update(
            job_id,
            images_done=p.images_done,
            bytes_written=p.bytes_written,
            images_rejected=p.images_rejected,
            out_of_tolerance=p.out_of_tolerance,
            shards_done=p.shards_done,
        )
        JOB_PROGRESS.labels(job_id).set(p.images_done / max(spec.count, 1))

    def _delete_kube_job(self, job_id: str) -> None:
        """A failed or cancelled job's Indexed Job goes too (its pods would keep writing otherwise)."""
        row = self.store.get(job_id)
        if self.kube is None or row is None or not row.kubernetes_job_name:
            return
        try:
            self.kube.delete(row.kubernetes_job_name)
        except Exception:  # the cluster is unreachable: say so; the Job's TTL removes it later
            log.exception("cannot delete the Kubernetes Job", extra={"job_id": job_id})

    def _finish_cancel(self, job_id: str, spec: JobSpec, dest: Destination) -> None:
        """CANCELLING → CANCELLED with a manifest of what was written."""
        self._delete_kube_job(job_id)
        result: FinalResult | None = None
        try:
            result = finalize(dest, spec, provenance(job_id, spec), partial=True)
        except OSError as e:
            log.warning("cannot write the partial manifest", extra={"job_id": job_id, "error": str(e)})
        self.store.update(
            job_id,
            only_if_state=(CANCELLING, RUNNING, QUEUED),
            state=CANCELLED,
            end_time=time.time(),
            manifest_uri=dest.uri_of("manifest.json") if result else "",
        )

    def _fail(self, job_id: str, code: grpc.StatusCode, message: str) -> None:
        log.warning("dataset job failed", extra={"job_id": job_id, "code": code.name, "reason": message})
        self._delete_kube_job(job_id)
        self.store.update(
            job_id, state=FAILED, end_time=time.time(), error_code=code.value[0], error_message=message[:2000]
        )

    def _score(self, job_id: str, spec: JobSpec, dest: Destination) -> str:
        """ScoreService on the finished set against the reference; the report joins the manifest."""
        from google.protobuf import json_format

        from hipgen.api.v1 import score_pb2

        request = score_pb2.ScoreSetsRequest(
            reference=score_pb2.ImageSet(uri=spec.reference_uri),
            candidate=score_pb2.ImageSet(uri=spec.output_uri),
            seed=spec.seed,
        )
        try:
            resp = self.score(request)  # type: ignore[misc]
        except grpc.RpcError as e:
            log.warning("scoring failed", extra={"job_id": job_id, "code": e.code().name})
            report = {"error": {"code": e.code().name, "message": e.details()}}
        else:
            report = json_format.MessageToDict(
                resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        attach_file(dest, SCORE_REPORT, (json.dumps(report, indent=1) + "\n").encode())
        return dest.uri_of(SCORE_REPORT)


class ShardFailedError(RuntimeError):
    pass


def provenance(job_id: str, spec: JobSpec) -> dict[str, Any]:
    """What the manifest says about how the data set was made (enough to reproduce it)."""
    return {"dataset_job": job_id, "spec": json.loads(spec.to_json()), "hipgen_version": __version__}


__all__ = ["JobRunner", "QueueFullError", "RunnerConfig", "provenance"]
