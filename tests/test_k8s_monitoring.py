"""The Prometheus/Grafana side of the Kubernetes deployment (k8s/components/monitoring,
k8s/monitoring/prometheus-adapter-values.yaml): every metric name a dashboard panel, an alert, a
recording rule or the custom-metrics adapter queries is one hipgen really exports (read from
``prometheus_client``'s registry after importing the modules that define them) or one of the external
exporters' names listed below; Triton's CPU names are checked against a real tritonserver's /metrics;
the rules pass ``promtool check rules`` and their unit tests (``promtool test rules``); the component
renders with ``kubectl kustomize``.

promtool and kubectl tests skip (saying why) when the tool is not installed, unless
``HIPGEN_REQUIRE_LINT=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_triton_backend as triton_tests
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPONENT = REPO / "k8s" / "components" / "monitoring"
PODMONITORS = COMPONENT / "podmonitors.yaml"
RULES = COMPONENT / "prometheusrule.yaml"
DASHBOARD = COMPONENT / "dashboards" / "hipgen-overview.json"
ALERT_TESTS = COMPONENT / "tests" / "alerts-test.yaml"
ADAPTER = REPO / "k8s" / "monitoring" / "prometheus-adapter-values.yaml"
RUNBOOK = "https://github.com/hipgen/hipgen/blob/main/docs/runbook.md#"

# Modules whose import registers hipgen's collectors on the default registry (what /metrics serves).
METRIC_MODULES = (
    "services.metrics",
    "services.angle.servicer",
    "services.generate.servicer",
    "services.score.servicer",
    "services.gateway.jobs",
    "services.gateway.shard",
)

# --- names from exporters that are not hipgen's code: the only ones a query may use besides ours ----------
# Triton's per-model metrics, exposed by every tritonserver, the CPU build included (checked against a real
# one in test_triton_exposes_the_cpu_metrics_the_queries_use).
TRITON_METRICS = frozenset(
    {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_pending_request_count",
    }
)
# Triton's GPU metrics: only a GPU build with GPU metrics on exposes them (the CPU server in the tests runs
# with --allow-gpu-metrics=false and has no GPU), so they cannot be checked here.
TRITON_GPU_METRICS = frozenset({"nv_gpu_utilization", "nv_gpu_memory_used_bytes"})
# kube-state-metrics, the ones the rules and the dashboard use.
KUBE_STATE_METRICS = frozenset(
    {"kube_pod_container_status_restarts_total", "kube_deployment_status_replicas_available"}
)
# Prometheus' own per-target series.
PROMETHEUS_METRICS = frozenset({"up"})
EXTERNAL_METRICS = TRITON_METRICS | TRITON_GPU_METRICS | KUBE_STATE_METRICS | PROMETHEUS_METRICS

_SAMPLE_SUFFIXES = {  # the sample names a prometheus_client family of each type exposes
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def exported_metric_names() -> set[str]:
    """Every sample name hipgen's processes can expose: the default registry's families after importing
    the metric modules. Labelled collectors with no child yet still yield their family (with no samples),
    so names come from the family's name and type; a counter family's name has ``_total`` stripped."""
    from prometheus_client import REGISTRY

    for module in METRIC_MODULES:
        importlib.import_module(module)
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SAMPLE_SUFFIXES[family.type])
    return names


# --- a small PromQL tokenizer: the metric names an expression selects ------------------------------------
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"((?:\\.|[^"\\])*)"')
_TOKEN = re.compile(
    r"""
    (?P<skip>\{[^{}]*\}|\[[^\]]*\])                                  # label matchers, ranges, subqueries
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])\d*)*)
  | (?P<variable>\$\{?\w+\}?)                                           # a Grafana variable
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"}) | _LABEL_LIST_KEYWORDS
_AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
# prometheus-adapter's Go-template placeholders, replaced by what the adapter puts there for a pod metric
_ADAPTER_PLACEHOLDERS = {"<<.LabelMatchers>>": 'namespace="hipgen",pod=~"p1|p2"', "<<.GroupBy>>": "pod"}


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression: identifiers that are not functions (followed by
    ``(``), aggregation operators, keywords or labels in a ``by (...)``/``on (...)`` list, after string
    literals, ``{...}`` matchers and ``[...]`` ranges are stripped; plus any ``__name__="..."`` matcher.
    A Grafana ``label_values(selector, label)`` query counts as its selector."""
    names = set(_NAME_MATCHER.findall(expr))
    text = _STRING.sub('""', expr)
    grafana = re.fullmatch(r"\s*label_values\((?:(.*),)?\s*\w+\s*\)\s*", text, re.DOTALL)
    if grafana:
        text = grafana.group(1) or ""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text) if m.lastgroup not in ("space", "skip")]
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and value.lower() in _LABEL_LIST_KEYWORDS and following == "(":
            while i < len(tokens) and tokens[i][1] != ")":  # a label list: no nesting
                i += 1
        elif (
            kind == "ident"
            and following != "("
            and value.lower() not in _KEYWORDS
            and value not in _AGGREGATIONS
        ):
            names.add(value)
        i += 1
    return names


def test_the_tokenizer_finds_exactly_the_metric_names():
    expr = (
        'sum by (service, le) (rate(grpc_server_handling_seconds_bucket{grpc_service!~"a{2}|b]", '
        'job="x"}[5m] offset 1h)) / on (service) group_left (pod) hipgen:grpc_requests:rate5m > bool 1e6 '
        'and label_replace(up, "dst", "$1", "src", "(.*)") unless count without (instance) '
        "(nv_gpu_utilization @ start()) or max_over_time(hipgen_dataset_queue_depth[$__rate_interval:1m]) "
        "* -Inf or vector(0.5) + sum(x_total) by (le) ^ 2 and clamp_min(y_seconds, 0x1F)"
    )
    assert metric_names(expr) == {
        "grpc_server_handling_seconds_bucket",
        "hipgen:grpc_requests:rate5m",
        "up",
        "nv_gpu_utilization",
        "hipgen_dataset_queue_depth",
        "x_total",
        "y_seconds",
    }
    assert metric_names('{__name__="hipgen_grpc_in_flight",namespace!="",pod!=""}') == {
        "hipgen_grpc_in_flight"
    }
    assert metric_names('label_values(grpc_server_started_total{namespace="$namespace"}, service)') == {
        "grpc_server_started_total"
    }
    assert metric_names("label_values(namespace)") == set()
    assert metric_names('sum(a{b="}"}) / ignoring(c) group_right b') == {"a", "b"}


# --- the expressions of each file -----------------------------------------------------------------------
def _load_rule() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load_rule()["spec"]["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


def dashboard_exprs() -> list[str]:
    dash = _dashboard()
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [_variable_query(v) for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def rule_exprs() -> list[str]:
    return [rule["expr"] for rule in _rules()]


def _adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(ADAPTER.read_text())["rules"]["custom"]


def adapter_exprs() -> list[str]:
    """seriesQuery and metricsQuery of every adapter rule, its placeholders filled in as the adapter would."""
    exprs = []
    for rule in _adapter_rules():
        query = rule["metricsQuery"]
        for placeholder, value in _ADAPTER_PLACEHOLDERS.items():
            query = query.replace(placeholder, value)
        assert "<<" not in query, f"a placeholder this test does not fill in: {query}"
        exprs += [rule["seriesQuery"], query]
    return exprs


def recorded_names() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


SOURCES = {  # file -> (its expressions, the fewest distinct names it must yield)
    "dashboard": (dashboard_exprs, 25),
    "prometheusrule": (rule_exprs, 15),
    "prometheus-adapter": (adapter_exprs, 3),
}


def _names(exprs: Iterable[str]) -> set[str]:
    return set().union(*(metric_names(e) for e in exprs))


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_metric_names()


def test_hipgen_metric_names_are_read_from_the_registry(exported: set[str]):
    ours = {n for n in exported if n.startswith(("hipgen_", "grpc_server_"))}
    assert len(ours) >= 20, sorted(exported)
    # the family-type suffixes were applied (a counter family's name comes without _total)
    assert {n.rsplit("_", 1)[-1] for n in ours} >= {"total", "bucket", "sum", "count"}
    assert not EXTERNAL_METRICS & exported, "an external exporter's name is also ours: drop it from the list"


@pytest.mark.parametrize("source", SOURCES)
def test_every_queried_metric_is_exported_by_hipgen_or_an_allowed_exporter(source: str, exported: set[str]):
    exprs_of, at_least = SOURCES[source]
    exprs = exprs_of()
    assert exprs and all(e.strip() for e in exprs), f"{source}: an empty query"
    names = _names(exprs)
    assert len(names) >= at_least, f"{source}: only {sorted(names)} found"
    records = {n for n in names if ":" in n}
    assert records <= recorded_names(), (
        f"{source}: no recording rule defines {sorted(records - recorded_names())}"
    )
    unknown = names - records - exported - EXTERNAL_METRICS
    assert not unknown, f"{source} queries metrics nothing exports: {sorted(unknown)}"


def test_every_allow_listed_external_metric_is_used():
    used = set().union(*(_names(exprs_of()) for exprs_of, _ in SOURCES.values()))
    assert used >= EXTERNAL_METRICS, f"stale allow-list entries: {sorted(EXTERNAL_METRICS - used)}"


# --- Triton's names, against a real tritonserver ---------------------------------------------------------
# The module-scoped fixture of test_triton_backend.py (the CPU tritonserver of the nvidia-pytriton wheel,
# skipping when it is not installed), reused here rather than duplicated.
triton_url = triton_tests.triton_url


def _metrics_port(grpc_url: str) -> int:
    """The metrics port of the tritonserver listening on ``grpc_url``: read from its command line, since
    ``running_tritonserver`` yields only the gRPC address."""
    grpc_port = grpc_url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if f"--grpc-port={grpc_port}" in args:
            for arg in args:
                if arg.startswith("--metrics-port="):
                    return int(arg.split("=", 1)[1])
    raise AssertionError(f"no tritonserver process with --grpc-port={grpc_port} and a --metrics-port")


def _exposed_names(url: str) -> set[str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as r:
        text = r.read().decode()
    return {re.split(r"[{\s]", line, maxsplit=1)[0] for line in text.splitlines() if line and line[0] != "#"}


def test_triton_exposes_the_cpu_metrics_the_queries_use(triton_url: str):
    from hipgen.inference.triton import TritonBackend

    url = f"http://127.0.0.1:{_metrics_port(triton_url)}/metrics"
    with TritonBackend(triton_url) as backend:
        side = backend.model_info("angle_locator").inputs[0].shape[-1]
        backend.infer("angle_locator", {"image": np.zeros((1, 1, side, side), np.float32)})
    deadline = time.monotonic() + 15  # gauges are refreshed every couple of seconds
    while True:
        names = _exposed_names(url)
        missing = TRITON_METRICS - names
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, f"tritonserver does not expose {sorted(missing)}; it has {sorted(names)}"


# --- the PrometheusRule -----------------------------------------------------------------------------------
def test_every_alert_has_a_severity_a_summary_a_description_and_its_runbook_anchor():
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert len(alerts) >= 10
    assert len({a["alert"] for a in alerts}) == len(alerts)
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), name
        assert alert["annotations"]["summary"].strip() and alert["annotations"]["description"].strip(), name
        assert alert["annotations"]["runbook_url"] == RUNBOOK + name.lower(), name
    for record in recorded_names():
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", record), (
            f"not level:metric:operations: {record}"
        )


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (on PATH)"
        if os.environ.get("HIPGEN_REQUIRE_LINT") == "1":
            pytest.fail(f"{message}, and HIPGEN_REQUIRE_LINT=1", pytrace=False)
        pytest.skip(f"{message}; set HIPGEN_REQUIRE_LINT=1 to fail instead")
    return path


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _write_rules(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_promtool_accepts_the_rules(tmp_path: Path):
    promtool = _require("promtool")
    result = _run(promtool, "check", "rules", _write_rules(tmp_path / "rules.yaml", _load_rule()["spec"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def _unit_test(promtool: str, tmp_path: Path, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    rule_files = yaml.safe_load(ALERT_TESTS.read_text())["rule_files"]
    assert rule_files == ["hipgen-rules.yaml"]
    _write_rules(tmp_path / "hipgen-rules.yaml", spec)
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    return _run(promtool, "test", "rules", ALERT_TESTS.name, cwd=tmp_path)


def test_the_alert_unit_tests_pass(tmp_path: Path):
    promtool = _require("promtool")
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert tested >= {"HipgenHighErrorRate", "HipgenDatasetJobStuck", "HipgenHighLatency"}
    result = _unit_test(promtool, tmp_path, _load_rule()["spec"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_unit_tests_catch_a_wrong_threshold(tmp_path: Path):
    """The unit tests hold the 'does not fire' cases too: an error-rate threshold of 0.5% (the 1% series
    then fires) or a stuck-job window of 10 minutes (the new job then fires) fails them."""
    promtool = _require("promtool")
    for alert, old, new in (
        ("HipgenHighErrorRate", "> 0.05", "> 0.005"),
        ("HipgenDatasetJobStuck", "[30m]", "[10m]"),
    ):
        spec = _load_rule()["spec"]
        rule = next(r for g in spec["groups"] for r in g["rules"] if r.get("alert") == alert)
        assert old in rule["expr"]
        rule["expr"] = rule["expr"].replace(old, new).replace("offset 30m", "offset 10m")
        result = _unit_test(promtool, tmp_path, spec)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and f"alertname: {alert}," in output, (alert, output)


_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": "hipgen", "$service": ".*"}


def test_promtool_parses_every_dashboard_and_adapter_query(tmp_path: Path):
    """Each query wrapped in a recording rule (Grafana variables and adapter placeholders filled in), so
    that promtool's parser checks its syntax."""
    promtool = _require("promtool")
    rules = []
    for i, expr in enumerate(dashboard_exprs() + adapter_exprs()):
        for variable, value in _GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        if expr.lstrip().startswith("label_values("):
            expr = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr, re.DOTALL).group(1)
        assert "$" not in expr.replace('"$1"', ""), f"an unfilled Grafana variable: {expr}"
        rules.append({"record": f"check:query_{i}:expr", "expr": expr})
    result = _run(
        promtool,
        "check",
        "rules",
        _write_rules(tmp_path / "q.yaml", {"groups": [{"name": "q", "rules": rules}]}),
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the dashboard ----------------------------------------------------------------------------------------
DASHBOARD_TOPICS = {  # what the overview must show -> the metric names one panel must query for it
    "requests/s by service and method": {"grpc_server_started_total"},
    "error ratio": {"grpc_server_handled_total", "grpc_server_started_total"},
    "latency p50/p95/p99": {"grpc_server_handling_seconds_bucket"},
    "in-flight RPCs": {"hipgen_grpc_in_flight"},
    "Triton queue time per request": {"nv_inference_queue_duration_us", "nv_inference_request_success"},
    "Triton pending requests": {"nv_inference_pending_request_count"},
    "batch size": {"nv_inference_count", "nv_inference_exec_count"},
    "GPU utilisation": {"nv_gpu_utilization"},
    "GPU memory": {"nv_gpu_memory_used_bytes"},
    "images generated/s": {"hipgen_generate_images_total"},
    "angle images measured/s": {"hipgen_angle_images_measured_total"},
    "denoising step time": {"hipgen_generate_step_seconds_bucket"},
    "dataset jobs by state": {"hipgen_dataset_jobs"},
    "queue depth": {"hipgen_dataset_queue_depth"},
    "job progress": {"hipgen_dataset_job_progress"},
    "shard time": {"hipgen_dataset_shard_seconds_bucket"},
    "shard retries": {"hipgen_dataset_shard_retries_total"},
    "pod restarts": {"kube_pod_container_status_restarts_total"},
}


def test_dashboard_panels_variables_and_topics():
    dash = _dashboard()
    assert dash["schemaVersion"] >= 38 and dash["uid"] == "hipgen-overview"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for name in ("namespace", "service"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert _variable_query(variables[name]).startswith("label_values(")
    assert variables["service"]["multi"] and variables["service"]["includeAll"]

    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "duplicate panel ids"
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["fieldConfig"]["defaults"].get("unit"), p[
            "title"
        ]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs) and all(refs), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert '"$namespace"' in t["expr"], f"{p['title']}: not filtered on the namespace variable"

    panel_names = {p["title"]: _names(t["expr"] for t in p["targets"]) for p in panels}
    for topic, needed in DASHBOARD_TOPICS.items():
        assert any(needed <= names for names in panel_names.values()), f"no panel shows {topic}"
    latency = [p for p in panels if "grpc_server_handling_seconds_bucket" in panel_names[p["title"]]]
    quantiles = {
        q
        for p in latency
        for t in p["targets"]
        for q in re.findall(r"histogram_quantile\(([\d.]+)", t["expr"])
    }
    assert quantiles >= {"0.5", "0.95", "0.99"}


# --- the PodMonitors and the adapter ----------------------------------------------------------------------
def test_podmonitors_scrape_the_metrics_port_and_label_the_service():
    monitors = {d["metadata"]["name"]: d for d in yaml.safe_load_all(PODMONITORS.read_text()) if d}
    assert all(
        m["kind"] == "PodMonitor" and m["apiVersion"] == "monitoring.coreos.com/v1" for m in monitors.values()
    )
    hipgen, triton = monitors["hipgen"]["spec"], monitors["hipgen-triton"]["spec"]
    assert hipgen["selector"]["matchLabels"] == {"app.kubernetes.io/part-of": "hipgen"}
    # Triton is part of hipgen too: scraped once, by its own monitor
    assert {
        "key": "app.kubernetes.io/name",
        "operator": "NotIn",
        "values": ["triton", "hipgen-dataset-worker"],
    } in (hipgen["selector"]["matchExpressions"])
    assert triton["selector"]["matchLabels"] == {"app.kubernetes.io/name": "triton"}
    for spec in (hipgen, triton):
        assert spec["jobLabel"] == "app.kubernetes.io/name"
        (endpoint,) = spec["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "15s")
        assert {
            "action": "replace",
            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
            "targetLabel": "service",
        } in endpoint["relabelings"]


def test_the_adapter_exposes_the_two_per_pod_metrics_the_hpas_read():
    values = yaml.safe_load(ADAPTER.read_text())
    assert values["rules"]["default"] is False
    rules = {r["name"]["as"]: r for r in _adapter_rules()}
    assert set(rules) == {"hipgen_rpcs_in_flight", "triton_queue_us_per_request"}
    for name, rule in rules.items():
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        (series,) = metric_names(rule["seriesQuery"])
        assert re.fullmatch(rule["name"]["matches"], series), name
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"], name
    assert 'grpc_service=~"hipgen\\\\.v1\\\\..*"' in rules["hipgen_rpcs_in_flight"]["metricsQuery"]
    assert "clamp_min(" in rules["triton_queue_us_per_request"]["metricsQuery"]


# --- the component renders ----------------------------------------------------------------------------------
def test_the_component_renders_with_kustomize(tmp_path: Path):
    kubectl = _require("kubectl")
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "hipgen",
                "components": [os.path.relpath(COMPONENT, tmp_path)],
            }
        )
    )
    # the component lies outside this kustomization's root
    result = _run(kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", tmp_path)
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = [o["kind"] for o in objects]
    assert kinds.count("PodMonitor") >= 2 and kinds.count("PrometheusRule") == 1, kinds
    assert set(kinds) == {"PodMonitor", "PrometheusRule", "ConfigMap"}, (
        "the promtool tests became a resource?"
    )
    assert all(o["metadata"]["namespace"] == "hipgen" for o in objects)
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    assert rule["metadata"]["name"] == "hipgen-alerts" and rule["spec"] == _load_rule()["spec"]
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"] == "hipgen-grafana-dashboards"  # no hash suffix
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["hipgen-overview.json"]) == _dashboard()
