"""Dataset jobs on Kubernetes: the gateway submits an *Indexed Job* through the official kubernetes
client and tracks it. Kubernetes is the scale-out engine (scheduling, retries per index, pod clean-up);
hipgen only cuts the job into shards whose seeds come from (job seed, shard index).

Each completion index runs ``python -m services.gateway.worker``, which reads ``JOB_COMPLETION_INDEX``
(set by the Job controller for Indexed Jobs) and runs shards ``[index·k, index·k + k)``, k =
``shards_per_pod``. A pod that dies is retried for its index only (``backoffLimitPerIndex``); a shard
already recorded in the destination is skipped, so retries and resumes redo at most one shard.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from hipgen.dataset.spec import JobSpec

log = logging.getLogger("services.gateway.kube")

WORKER_COMMAND = ["python", "-m", "services.gateway.worker"]
LABEL_APP = "app.kubernetes.io/name"
LABEL_JOB = "hipgen.io/dataset-job"
TOKEN_DIR = "/var/run/hipgen/token"
TOKEN_FILE = f"{TOKEN_DIR}/token"


@dataclass(frozen=True)
class KubeOptions:
    namespace: str
    image: str
    parallelism: int
    shards_per_pod: int
    generate_address: str
    service_account: str = "hipgen-dataset-worker"
    # a Secret with key "token", mounted read-only, when the services check tokens (the gateway has a
    # downstream token); None: the workers call without one
    token_secret: str | None = "hipgen-downstream-token"
    cpu: str = "500m"
    memory: str = "1Gi"
    backoff_limit_per_index: int = 3
    ttl_seconds_after_finished: int = 86_400


def job_name(job_id: str) -> str:
    """A DNS-1123 name (≤ 63 characters) for the Indexed Job of a dataset job."""
    return f"hipgen-dataset-{job_id[:32]}"


def completions(spec: JobSpec, shards_per_pod: int) -> int:
    return math.ceil(spec.shard_count / shards_per_pod)


def build_indexed_job(job_id: str, spec: JobSpec, opts: KubeOptions) -> Any:
    """The ``V1Job`` for a dataset job (Indexed completion mode, one index per shard range)."""
    from kubernetes import client as k

    n = completions(spec, opts.shards_per_pod)
    labels = {LABEL_APP: "hipgen-dataset-worker", LABEL_JOB: job_id[:63]}
    container = k.V1Container(
        name="shard-worker",
        image=opts.image,
        command=WORKER_COMMAND,
        env=[
            k.V1EnvVar(name="HIPGEN_JOB_ID", value=job_id),
            k.V1EnvVar(name="HIPGEN_JOB_SPEC", value=spec.to_json()),
            k.V1EnvVar(name="HIPGEN_SHARDS_PER_POD", value=str(opts.shards_per_pod)),
            k.V1EnvVar(name="HIPGEN_GENERATE_ADDRESS", value=opts.generate_address),
            k.V1EnvVar(name="HIPGEN_LOG_FORMAT", value="json"),
            *(
                [k.V1EnvVar(name="HIPGEN_DOWNSTREAM_TOKEN_FILE", value=TOKEN_FILE)]
                if opts.token_secret
                else []
            ),
        ],
        resources=k.V1ResourceRequirements(
            requests={"cpu": opts.cpu, "memory": opts.memory},
            limits={"cpu": opts.cpu, "memory": opts.memory},
        ),
        security_context=k.V1SecurityContext(
            run_as_non_root=True,
            read_only_root_filesystem=True,
            allow_privilege_escalation=False,
            capabilities=k.V1Capabilities(drop=["ALL"]),
            seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volume_mounts=[
            k.V1VolumeMount(name="tmp", mount_path="/tmp"),
            *(
                [k.V1VolumeMount(name="token", mount_path=TOKEN_DIR, read_only=True)]
                if opts.token_secret
                else []
            ),
        ],
    )
    pod = k.V1PodTemplateSpec(
        metadata=k.V1ObjectMeta(labels=labels),
        spec=k.V1PodSpec(
            restart_policy="Never",
            service_account_name=opts.service_account,
            automount_service_account_token=False,
            security_context=k.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=10001,
                run_as_group=10001,
                fs_group=10001,
                seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[container],
            volumes=[
                k.V1Volume(name="tmp", empty_dir=k.V1EmptyDirVolumeSource(size_limit="2Gi")),
                *(
                    [k.V1Volume(name="token", secret=k.V1SecretVolumeSource(secret_name=opts.token_secret))]
                    if opts.token_secret
                    else []
                ),
            ],
        ),
    )
    return k.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k.V1ObjectMeta(name=job_name(job_id), namespace=opts.namespace, labels=labels),
        spec=k.V1JobSpec(
            completion_mode="Indexed",
            completions=n,
            parallelism=min(opts.parallelism, n),
            backoff_limit_per_index=opts.backoff_limit_per_index,
            max_failed_indexes=0,
            ttl_seconds_after_finished=opts.ttl_seconds_after_finished,
            template=pod,
        ),
    )


def job_manifest(job: Any) -> dict[str, Any]:
    """The Job as the plain dict kubectl would send (for validation and for `kubectl apply`)."""
    from kubernetes import client as k

    return k.ApiClient().sanitize_for_serialization(job)


@dataclass(frozen=True)
class KubeJobStatus:
    succeeded: int
    failed: int
    active: int
    complete: bool
    failed_reason: str | None


def job_status(job: Any) -> KubeJobStatus:
    """Read a ``V1Job``'s status: counts and whether it completed or failed (conditions)."""
    st = job.status
    conditions = {c.type: c for c in (st.conditions or []) if c.status == "True"} if st else {}
    failed = conditions.get("Failed")
    return KubeJobStatus(
        succeeded=(st.succeeded or 0) if st else 0,
        failed=(st.failed or 0) if st else 0,
        active=(st.active or 0) if st else 0,
        complete="Complete" in conditions,
        failed_reason=(failed.reason or "Failed") + (f": {failed.message}" if failed.message else "")
        if failed
        else None,
    )


class KubernetesExecutor:
    """Submits, reads and deletes Indexed Jobs (in-cluster config, else the local kubeconfig)."""

    def __init__(self, opts: KubeOptions, batch_api: Any | None = None) -> None:
        self.opts = opts
        self._api = batch_api

    @property
    def api(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._api = client.BatchV1Api()
        return self._api

    def submit(self, job_id: str, spec: JobSpec) -> str:
        """Create the Indexed Job (an existing one of the same name — a resumed job — is kept)."""
        from kubernetes.client.exceptions import ApiException

        job = build_indexed_job(job_id, spec, self.opts)
        try:
            self.api.create_namespaced_job(self.opts.namespace, job)
        except ApiException as e:
            if e.status != 409:  # 409 Conflict: it already exists (the gateway restarted)
                raise
        return job.metadata.name

    def status(self, name: str) -> KubeJobStatus:
        return job_status(self.api.read_namespaced_job_status(name, self.opts.namespace))

    def delete(self, name: str) -> None:
        from kubernetes import client as k
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_job(
                name, self.opts.namespace, body=k.V1DeleteOptions(propagation_policy="Background")
            )
        except ApiException as e:
            if e.status != 404:
                raise


def job_yaml(job_id: str, spec: JobSpec, opts: KubeOptions) -> str:
    """The Indexed Job the gateway would submit for ``spec``, as YAML for ``kubectl``."""
    import yaml

    return yaml.safe_dump(job_manifest(build_indexed_job(job_id, spec, opts)), sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    """``python -m services.gateway.kube --spec spec.json --job-id ID``: print the Indexed Job of a
    dataset job (what the gateway submits), e.g. to read or review it; k8s/batch/ keeps one."""
    import argparse
    import sys

    from hipgen.settings import get_settings

    settings = get_settings()
    p = argparse.ArgumentParser(prog="python -m services.gateway.kube", description=main.__doc__)
    p.add_argument("--spec", required=True, help="the JobSpec as JSON (a file, or - for stdin)")
    p.add_argument("--job-id", required=True, help="the dataset job's id (the Job is named after it)")
    p.add_argument("--namespace", default=settings.kubernetes_namespace)
    p.add_argument("--image", default=settings.kubernetes_worker_image)
    p.add_argument("--parallelism", type=int, default=settings.kubernetes_parallelism)
    p.add_argument("--shards-per-pod", type=int, default=settings.kubernetes_shards_per_pod)
    p.add_argument("--generate-address", default=settings.generate_address)
    args = p.parse_args(argv)
    if args.spec == "-":
        text = sys.stdin.read()
    else:
        with open(args.spec, encoding="utf-8") as f:
            text = f.read()
    try:
        spec = JobSpec.from_json(text)
    except (ValueError, KeyError, TypeError) as e:
        p.error(f"--spec is not a dataset JobSpec: {type(e).__name__}: {e}")
    opts = KubeOptions(
        args.namespace, args.image, args.parallelism, args.shards_per_pod, args.generate_address
    )
    sys.stdout.write(job_yaml(args.job_id, spec, opts))
    return 0


__all__ = [
    "KubeJobStatus",
    "KubeOptions",
    "KubernetesExecutor",
    "build_indexed_job",
    "job_manifest",
    "job_name",
    "job_status",
    "job_yaml",
]


if __name__ == "__main__":
    raise SystemExit(main())
