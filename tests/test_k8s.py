"""The Kubernetes deployment (k8s/), validated offline and strictly (issue 9).

Every overlay (and k8s/batch) is rendered with ``kubectl kustomize``; every object is validated
against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail) or, for the
Prometheus operator's kinds, which those schemas do not cover, against the subset schemas below;
checkov and yamllint must find nothing. Then what a schema cannot see: every workload has probes,
resources and a restricted security context; ports, names and settings agree with the services' own
configuration (each container's environment must build a valid :class:`hipgen.settings.Settings`);
the gateway's RBAC is exactly what its Kubernetes executor calls; the HPAs' metrics are ones the
adapter serves. Monitoring queries: tests/test_k8s_monitoring.py; images: tests/test_dockerfiles.py.

Without kubectl (or the lint tools) these tests skip and say so, unless HIPGEN_REQUIRE_LINT=1 (CI)
makes a missing tool a failure.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hipgen.dataset.spec import JobSpec
from hipgen.settings import ENV_PREFIX, Settings
from services.gateway.kube import KubeOptions, KubernetesExecutor, build_indexed_job, job_manifest, job_yaml
from services.gateway.server import GENERATE_TIMEOUT_S, SCORE_TIMEOUT_S
from services.server import SERVICES

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
TARGETS = {
    "cpu-dev": K8S / "overlays" / "cpu-dev",
    "gpu": K8S / "overlays" / "gpu",
    "prod": K8S / "overlays" / "prod",
    "batch": K8S / "batch",
}
# plain manifests outside any kustomization (applied with kubectl create -f)
LOOSE = [K8S / "batch" / "export-job.yaml", K8S / "batch" / "dataset-indexed-job.yaml"]
K8S_VERSION = "1.33.0"
HIPGEN_APPS = {"gateway": 50051, "angle": 50052, "generate": 50053, "score": 50054}
METRICS_PORT = 9464


def tool(name: str) -> str:
    """A validator's path: the lint venv first (``make`` installs it), then PATH; absent → skip, or
    fail under HIPGEN_REQUIRE_LINT=1."""
    for candidate in (REPO / ".venv-lint" / "bin" / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    message = f"{name} is not installed (`make test` installs it)"
    if os.environ.get("HIPGEN_REQUIRE_LINT") == "1":
        pytest.fail(message + " and HIPGEN_REQUIRE_LINT=1 requires it")
    pytest.skip(message)


@functools.cache
def rendered_text(target: str) -> str:
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(TARGETS[target])], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"kubectl kustomize {target} failed:\n{out.stderr}"
    return out.stdout


def objects(target: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered_text(target)) if d]


def loose_objects() -> list[dict[str, Any]]:
    return [d for p in LOOSE for d in yaml.safe_load_all(p.read_text()) if d]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def workloads(objs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for o in objs:
        spec = pod_spec(o)
        if spec is not None:
            yield o, spec


# --- the Prometheus operator's kinds: subset schemas of the fields hipgen uses -----------------------
# kubernetes-validate has the core API only, and the operator's CRDs are not installed here; these
# schemas (written from the operator's API reference) reject unknown fields at every level hipgen sets.
def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR = _obj({"matchLabels": _LABELS, "matchExpressions": {"type": "array"}})
_RELABEL = _obj(
    {k: _STR for k in ("action", "regex", "replacement", "separator", "targetLabel")}
    | {"sourceLabels": {"type": "array", "items": _STR}, "modulus": {"type": "integer"}}
)
_ENDPOINT = _obj(
    {
        "port": _STR,
        "path": _STR,
        "interval": _STR,
        "scrapeTimeout": _STR,
        "scheme": _STR,
        "honorLabels": {"type": "boolean"},
        "relabelings": {"type": "array", "items": _RELABEL},
        "metricRelabelings": {"type": "array", "items": _RELABEL},
    }
)
_META = {"type": "object"}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "PodMonitor": _obj(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": _STR,
            "metadata": _META,
            "spec": _obj(
                {
                    "selector": _SELECTOR,
                    "namespaceSelector": _obj({"any": {"type": "boolean"}, "matchNames": {"type": "array"}}),
                    "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
                    "jobLabel": _STR,
                    "podTargetLabels": {"type": "array", "items": _STR},
                },
                ("selector", "podMetricsEndpoints"),
            ),
        },
        ("apiVersion", "kind", "metadata", "spec"),
    ),
    "ServiceMonitor": _obj(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": _STR,
            "metadata": _META,
            "spec": _obj(
                {
                    "selector": _SELECTOR,
                    "namespaceSelector": _obj({"any": {"type": "boolean"}, "matchNames": {"type": "array"}}),
                    "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
                    "jobLabel": _STR,
                },
                ("selector", "endpoints"),
            ),
        },
        ("apiVersion", "kind", "metadata", "spec"),
    ),
    "PrometheusRule": _obj(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": _STR,
            "metadata": _META,
            "spec": _obj(
                {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": _obj(
                            {
                                "name": _STR,
                                "interval": _STR,
                                "rules": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": _obj(
                                        {
                                            "alert": _STR,
                                            "record": _STR,
                                            "expr": {"type": ["string", "integer"]},
                                            "for": _STR,
                                            "keep_firing_for": _STR,
                                            "labels": _LABELS,
                                            "annotations": _LABELS,
                                        },
                                        ("expr",),
                                    ),
                                },
                            },
                            ("name", "rules"),
                        ),
                    }
                },
                ("groups",),
            ),
        },
        ("apiVersion", "kind", "metadata", "spec"),
    ),
}


def validate_object(obj: dict[str, Any]) -> None:
    """Raise on any schema error (core kinds: kubernetes-validate, strict; operator kinds: above)."""
    if obj["kind"] in CRD_SCHEMAS:
        import jsonschema

        jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
        return
    import kubernetes_validate as kv

    kv.validate(obj, K8S_VERSION, strict=True)


# --- rendering and schemas --------------------------------------------------------------------------
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_renders_and_validates(target: str) -> None:
    objs = objects(target)
    assert objs, f"{target} rendered nothing"
    for o in objs:
        try:
            validate_object(o)
        except Exception as e:  # the validators' own errors: name the object
            pytest.fail(f"{target}: {o['kind']}/{o['metadata'].get('name')} is invalid: {e}")
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == "hipgen", f"{o['kind']}/{o['metadata']['name']}"


def test_loose_manifests_validate() -> None:
    for o in loose_objects():
        validate_object(o)
        assert o["metadata"]["namespace"] == "hipgen"


def test_validation_is_strict() -> None:
    """The validators reject a misspelt field and a wrong type: the passes above mean something."""
    import jsonschema
    import kubernetes_validate as kv

    deployment = copy.deepcopy(by_kind(objects("cpu-dev"), "Deployment")["angle"])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kv.ValidationError):
        validate_object(deployment)
    rule = copy.deepcopy(next(iter(by_kind(objects("gpu"), "PrometheusRule").values())))
    rule["spec"]["groups"][0]["rules"][0]["fore"] = "10m"
    with pytest.raises(jsonschema.ValidationError):
        validate_object(rule)


def test_overlays_differ_as_documented() -> None:
    cpu, gpu, prod = objects("cpu-dev"), objects("gpu"), objects("prod")
    assert "triton" not in by_kind(cpu, "Deployment") and not by_kind(cpu, "HorizontalPodAutoscaler")
    assert all(d["spec"]["replicas"] == 1 for d in by_kind(cpu, "Deployment").values())
    config = {o["metadata"]["name"]: o for o in gpu if o["kind"] == "ConfigMap"}
    hipgen_config = next(v for k, v in config.items() if k.startswith("hipgen-config"))
    assert hipgen_config["data"]["HIPGEN_BACKEND"] == "triton"
    triton = by_kind(gpu, "Deployment")["triton"]
    tspec = triton["spec"]["template"]["spec"]
    assert tspec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert tspec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in tspec["tolerations"])
    assert tspec["containers"][0]["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert {p["containerPort"] for p in tspec["containers"][0]["ports"]} == {8000, 8001, 8002}
    assert set(by_kind(gpu, "HorizontalPodAutoscaler")) == {"angle", "generate", "triton"}
    assert by_kind(gpu, "PodMonitor") and by_kind(gpu, "PrometheusRule")
    # prod: auth on every hipgen server, the database from a Secret, two Triton pods
    for name in HIPGEN_APPS:
        container = by_kind(prod, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"] for e in container["env"]}
        assert "HIPGEN_AUTH_SECRET_FILE" in env, name
    assert by_kind(prod, "Deployment")["triton"]["spec"]["replicas"] == 2
    assert by_kind(prod, "PodDisruptionBudget")["generate"]["spec"] == {
        "minAvailable": 2,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "generate"}},
    }


# --- linters ----------------------------------------------------------------------------------------
def test_checkov_finds_nothing(tmp_path: Path) -> None:
    files = []
    for target in sorted(TARGETS):
        path = tmp_path / f"{target}.yaml"
        path.write_text(rendered_text(target))
        files += ["-f", str(path)]
    files += [a for p in LOOSE for a in ("-f", str(p))]
    out = subprocess.run(
        [tool("checkov"), "--framework", "kubernetes", "--config-file", str(K8S / ".checkov.yaml")]
        + files
        + ["--quiet", "--compact", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{f['check_id']} {f['check_name']}: {f['resource']} ({Path(f['file_path']).name})"
        for r in reports
        for f in r["results"]["failed_checks"]
    ]
    assert not failed, "checkov:\n" + "\n".join(failed)
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed > 100, f"checkov ran only {passed} checks"  # it really read the manifests


def test_yamllint_is_clean() -> None:
    out = subprocess.run(
        [tool("yamllint"), "-c", str(REPO / ".yamllint.yaml"), "-f", "parsable", str(K8S)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# --- what schemas cannot see ------------------------------------------------------------------------
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_workload_has_resources_and_a_restricted_security_context(target: str) -> None:
    objs = objects(target) + (loose_objects() if target == "batch" else [])
    found = 0
    for o, spec in workloads(objs):
        found += 1
        name = f"{target}: {o['kind']}/{o['metadata'].get('name') or o['metadata'].get('generateName')}"
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) >= 10000, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for c in spec["containers"] + spec.get("initContainers", []):
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{name}: {c['name']} {kind}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"
        if o["kind"] == "Deployment":
            c = spec["containers"][0]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{name}: no {probe}"
            assert spec.get("topologySpreadConstraints"), name
            assert c["lifecycle"]["preStop"], name
    assert found >= (2 if target == "batch" else 4)


def _env(container: dict[str, Any], objs: list[dict[str, Any]]) -> dict[str, str]:
    """A container's environment as Kubernetes builds it: envFrom ConfigMaps, then env (which wins);
    values from the downward API or Secrets become placeholders of the right kind."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = "hipgen"  # metadata.namespace
        elif e["name"] == "HIPGEN_DATASET_DB_URL":
            env[e["name"]] = "postgresql+psycopg://user@db/hipgen"  # from a Secret
        else:
            raise AssertionError(f"unexpected valueFrom for {e['name']}")
    return env


def settings_of(container: dict[str, Any], objs: list[dict[str, Any]]) -> Settings:
    """The Settings a hipgen container starts with: every HIPGEN_* variable must be a real setting
    (Settings forbids unknown ones) with a valid value."""
    env = _env(container, objs)
    fields = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    return Settings(**fields)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("dns:///").rpartition(":")
    return host, int(port)


@pytest.mark.parametrize("target", ["cpu-dev", "gpu", "prod"])
def test_ports_names_and_settings_match_the_services(target: str) -> None:
    objs = objects(target)
    deployments, services = by_kind(objs, "Deployment"), by_kind(objs, "Service")
    for name, port in HIPGEN_APPS.items():
        spec = deployments[name]["spec"]["template"]["spec"]
        c = spec["containers"][0]
        settings = settings_of(c, objs)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert settings.port == port == ports["grpc"], name
        assert settings.metrics_port == METRICS_PORT == ports["metrics"], name
        assert settings.host == "0.0.0.0", f"{name} must listen on the pod's address"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["grpc"]["port"] == port, f"{name} {probe}"  # gRPC probes take numbers only
        carried = c["readinessProbe"]["grpc"]["service"]
        expected = "datasetservice" if name == "gateway" else f"{name}service"
        assert carried in SERVICES and carried.lower().endswith(expected), carried
        # preStop pause + the server's grace period fit in the pod's termination grace period
        pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert settings.grace_period_s + pause <= spec["terminationGracePeriodSeconds"], name
        svc = services[name]["spec"]
        assert svc["selector"] == {"app.kubernetes.io/name": name}
        assert {p["name"]: (p["port"], p["targetPort"]) for p in svc["ports"]} == {
            "grpc": (port, "grpc"),
            "metrics": (METRICS_PORT, "metrics"),
        }
    gateway = settings_of(deployments["gateway"]["spec"]["template"]["spec"]["containers"][0], objs)
    for service, address in (
        ("angle", gateway.angle_address),
        ("generate", gateway.generate_address),
        ("score", gateway.score_address),
    ):
        assert address.startswith("dns:///"), address  # resolved per pod (headless), balanced per call
        host, port = _host_port(address)
        assert host == service and port == HIPGEN_APPS[service]
        assert services[service]["spec"]["clusterIP"] == "None", f"{service} must be headless"
    assert gateway.downstream_lb_policy == "round_robin"
    # the model services age connections (so the gateway finds new pods) but never cut a call: the
    # grace covers the gateway's longest deadlines; the single gateway pod does not age its clients'
    assert gateway.max_connection_age_s == 0, "ageing the gateway would cut long Watch streams"
    for name in ("angle", "generate", "score"):
        s = settings_of(deployments[name]["spec"]["template"]["spec"]["containers"][0], objs)
        assert s.max_connection_age_s > 0, name
        assert s.max_connection_age_grace_s >= max(GENERATE_TIMEOUT_S, SCORE_TIMEOUT_S), name
    gateway_image = deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert gateway.kubernetes_worker_image == gateway_image, "the shard workers run the gateway's image"
    if "triton" in deployments:
        for name in ("angle", "generate", "score"):
            s = settings_of(deployments[name]["spec"]["template"]["spec"]["containers"][0], objs)
            assert s.backend == "triton"
            host, port = _host_port(s.triton_url)
            assert host == "triton" and port == 8001 and services["triton"]["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("target", ["cpu-dev", "gpu", "prod"])
def test_network_policies_allow_exactly_the_call_paths(target: str) -> None:
    objs = objects(target)
    policies = by_kind(objs, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}

    def ingress_from(app: str) -> set[str]:
        """Who may reach ``app``'s gRPC port (pod names, or '*' for anyone)."""
        out: set[str] = set()
        for p in policies.values():
            if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") != app:
                continue
            for rule in p["spec"].get("ingress", []):
                if not any(port["port"] == "grpc" for port in rule.get("ports", [])):
                    continue
                if "from" not in rule:
                    out.add("*")
                for peer in rule.get("from", []):
                    out.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
        return out

    assert ingress_from("gateway") == {"*"}
    assert ingress_from("angle") == {"gateway"} and ingress_from("score") == {"gateway"}
    assert ingress_from("generate") == {"gateway", "hipgen-dataset-worker"}
    egress = policies["gateway"]["spec"]["egress"]
    allowed = {
        (peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"], port["port"])
        for rule in egress
        for peer in rule.get("to", [])
        for port in rule["ports"]
    }
    assert allowed == {(app, port) for app, port in HIPGEN_APPS.items() if app != "gateway"}
    gateway_ports = {
        port["port"]
        for p in policies.values()
        if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "gateway"
        for rule in p["spec"].get("egress", [])
        for port in rule["ports"]
    }
    assert {443, 6443} <= gateway_ports  # the Kubernetes API (dataset Jobs), s3:// outputs
    if target == "prod":
        assert 5432 in gateway_ports, "prod's gateway must reach its PostgreSQL"
    # Prometheus reaches every pod that serves /metrics (Triton's 8002 included)
    scrape = policies["allow-prometheus-scrape"]["spec"]
    assert scrape["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    selector = scrape["podSelector"]["matchLabels"]
    for name, d in by_kind(objs, "Deployment").items():
        template = d["spec"]["template"]
        if any(p["name"] == "metrics" for p in template["spec"]["containers"][0]["ports"]):
            labels = template["metadata"]["labels"]
            assert selector.items() <= labels.items(), f"Prometheus cannot scrape {name}: {labels}"


def test_rbac_is_exactly_what_the_kubernetes_executor_calls() -> None:
    """Run the executor against a recording stand-in of BatchV1Api and compare the (resource, verb)
    pairs it needs with the gateway's Role: nothing missing, nothing extra."""
    from kubernetes import client as k

    calls: list[str] = []

    class RecordingBatchApi:
        def __getattr__(self, method: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                calls.append(method)
                return k.V1Job(status=k.V1JobStatus(succeeded=1))

            return call

    spec = JobSpec.from_json((K8S / "batch" / "dataset-spec.example.json").read_text())
    executor = KubernetesExecutor(
        KubeOptions("hipgen", "hipgen/gateway:0.1.0", 4, 4, "dns:///generate:50053"), RecordingBatchApi()
    )
    name = executor.submit("0123456789abcdef", spec)
    executor.status(name)
    executor.delete(name)
    verb_of = {
        "create_namespaced_job": ("jobs", "create"),
        "read_namespaced_job_status": ("jobs/status", "get"),
        "delete_namespaced_job": ("jobs", "delete"),
    }
    assert set(calls) <= set(verb_of), f"the executor makes calls this test does not know: {calls}"
    needed = {verb_of[c] for c in calls}

    objs = objects("prod")
    roles = by_kind(objs, "Role")
    assert set(roles) == {"hipgen-gateway-dataset-jobs"} and not by_kind(objs, "ClusterRole")
    granted = {
        (res, verb)
        for rule in roles["hipgen-gateway-dataset-jobs"]["rules"]
        for res in rule["resources"]
        for verb in rule["verbs"]
        if rule["apiGroups"] == ["batch"]
    }
    assert granted == needed
    binding = by_kind(objs, "RoleBinding")["hipgen-gateway-dataset-jobs"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hipgen-gateway", "namespace": "hipgen"}
    ]
    # only the gateway's pods carry an API token; the workers' account is the one the executor names
    accounts = by_kind(objs, "ServiceAccount")
    assert {n for n, a in accounts.items() if a.get("automountServiceAccountToken")} == {"hipgen-gateway"}
    assert executor.opts.service_account in accounts
    for d in by_kind(objs, "Deployment").values():
        spec_ = d["spec"]["template"]["spec"]
        assert spec_.get("automountServiceAccountToken") is (d["metadata"]["name"] == "gateway")


def test_dataset_job_template_is_what_the_gateway_submits() -> None:
    committed = yaml.safe_load((K8S / "batch" / "dataset-indexed-job.yaml").read_text())
    header = (K8S / "batch" / "dataset-indexed-job.yaml").read_text()
    command = re.search(r"--job-id (\S+) --image (\S+) \\\n#\s+--generate-address (\S+)", header)
    assert command, "the header must show the command that made the file"
    job_id, image, address = command.groups()
    spec = JobSpec.from_json((K8S / "batch" / "dataset-spec.example.json").read_text())
    opts = KubeOptions("hipgen", image, 8, 4, address)
    assert committed == yaml.safe_load(job_yaml(job_id, spec, opts)), (
        "k8s/batch/dataset-indexed-job.yaml is stale: re-run the command in its header"
    )
    secrets_used = {
        v["secret"]["secretName"] for v in committed["spec"]["template"]["spec"]["volumes"] if "secret" in v
    }
    assert secrets_used == {opts.token_secret}
    prod_volumes = by_kind(objects("prod"), "Deployment")["gateway"]["spec"]["template"]["spec"]["volumes"]
    assert opts.token_secret in {v["secret"]["secretName"] for v in prod_volumes if "secret" in v}


def test_hpa_metrics_are_served_by_the_adapter() -> None:
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    served = {rule["name"]["as"] for rule in values["rules"]["custom"]}
    hpas = by_kind(objects("gpu"), "HorizontalPodAutoscaler")
    for name, hpa in hpas.items():
        spec = hpa["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300, name
        custom = [m["pods"]["metric"]["name"] for m in spec["metrics"] if m["type"] == "Pods"]
        assert custom and set(custom) <= served, f"{name}: {custom} not in the adapter's {served}"


def test_worker_image_follows_the_gateway_image_an_overlay_sets(tmp_path: Path) -> None:
    """An operator re-points the images at a registry in an overlay of their own: the dataset workers
    (which run the gateway's image) must follow. Each of our overlays carries the `replacements` rule
    that does it; here an operator's overlay on top of each, with `images:` and that same rule."""
    image = "registry.example.org/hipgen/gateway@sha256:" + "ab" * 32
    name, digest = image.split("@")
    for target in ("cpu-dev", "gpu", "prod"):
        rule = yaml.safe_load((TARGETS[target] / "kustomization.yaml").read_text())["replacements"]
        assert objects(target)  # renders as it is
        overlay = tmp_path / target
        overlay.mkdir()
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(TARGETS[target], overlay)],
            "images": [{"name": "hipgen/gateway", "newName": name, "digest": digest}],
            "replacements": rule,
        }
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        out = subprocess.run(
            [tool("kubectl"), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        objs = [d for d in yaml.safe_load_all(out.stdout) if d]
        config = next(
            o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("hipgen-config")
        )
        assert config["data"]["HIPGEN_KUBERNETES_WORKER_IMAGE"] == image, target
        gateway = by_kind(objs, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
        assert gateway["image"] == image


def test_dataset_workers_mount_a_token_only_when_the_gateway_has_one() -> None:
    """Without auth (cpu-dev, gpu) there is no hipgen-downstream-token Secret: a worker pointed at a
    token file would fail every shard, so the Job carries neither the file nor the Secret."""
    spec = JobSpec.from_json((K8S / "batch" / "dataset-spec.example.json").read_text())
    base = KubeOptions("hipgen", "hipgen/gateway:0.1.0", 4, 4, "dns:///generate:50053")
    for token_secret in ("hipgen-downstream-token", None):
        opts = dataclasses.replace(base, token_secret=token_secret)
        pod = job_manifest(build_indexed_job("0123456789abcdef", spec, opts))["spec"]["template"]["spec"]
        env = {e["name"] for e in pod["containers"][0]["env"]}
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert ("HIPGEN_DOWNSTREAM_TOKEN_FILE" in env) is bool(token_secret)
        assert secrets == ({token_secret} if token_secret else set())
