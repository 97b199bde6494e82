"""The Kubernetes manifests in deploy/: every object is valid against the Kubernetes schemas (kubernetes-validate,
offline), and what they name — ports, probes, metrics, services — is what the code serves."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

from glotta.cli.main import build_parser
from glotta.server import metrics  # noqa: F401 - registers the gateway's metric families
from glotta.server.entrypoints.health import router as health_router

from .conftest import ROOT

DOCS = [d for f in sorted((ROOT / "deploy").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
K8S_VERSION = "1.30.0"


def _one(kind: str, name: str) -> dict:
    (doc,) = [d for d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _container(deployment: str) -> dict:
    return _one("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("doc", [d for d in DOCS if "monitoring.coreos.com" not in d["apiVersion"]],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_valid_kubernetes(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_caught():
    bad = {**_one("Service", "glotta-triton"), "spec": {"clusterIP": "None", "ports": [{"port": "grpc"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_gateway_ports_probes_and_triton_address_match_the_code():
    gw = _container("glotta-gateway")
    assert gw["command"][:2] == ["/opt/nvidia/nvidia_entrypoint.sh", "/opt/glotta/venv/bin/glotta"]  # the venv's
    assert "/opt/glotta/venv/bin/glotta" in (ROOT / "Dockerfile").read_text()  # where the image installs it
    args = build_parser().parse_args(gw["command"][2:] + gw["args"])
    assert _ports(gw) == {"http": args.port, "grpc": args.grpc_port}
    served = {r.path for r in health_router.routes}
    assert {gw["livenessProbe"]["httpGet"]["path"], gw["readinessProbe"]["httpGet"]["path"]} == \
        {"/health/live", "/health/ready"} <= served
    triton_svc = _one("Service", "glotta-triton")
    assert triton_svc["spec"]["clusterIP"] == "None"  # headless: one DNS answer per pod
    grpc_port = {p["name"]: p["port"] for p in triton_svc["spec"]["ports"]}["grpc"]
    assert args.triton_url == [f"dns:///{triton_svc['metadata']['name']}:{grpc_port}"]
    assert gw["args"] and "--drain-timeout=30" in gw["args"]
    assert args.host == "0.0.0.0"  # glotta serve binds loopback unless told: a pod must say so (docs/security.md)
    pod = _one("Deployment", "glotta-gateway")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > args.drain_timeout + 3  # the drain, then the 503s go out


def test_triton_ports_probes_volume_and_gpu():
    """The Triton pod starts through NGC's entrypoint and Glotta's launcher (`glotta triton run`: mpirun for TP > 1,
    stubs on the venv's Python, the repository as working directory), whose ports the probes and Service use."""
    tr = _container("glotta-triton")
    assert tr["command"][:2] == ["/opt/nvidia/nvidia_entrypoint.sh", "/opt/glotta/venv/bin/glotta"]
    args = build_parser().parse_args(tr["command"][2:] + tr["args"])
    assert (args.command, args.action) == ("triton", "run") and args.host == "0.0.0.0"
    assert _ports(tr) == {"http": args.base_port, "grpc": args.base_port + 1, "metrics": args.base_port + 2}
    assert tr["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert tr["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"mountPath": "/models", "name": "models", "readOnly": True} in tr["volumeMounts"]
    assert {"name": "GLOTTA_MODEL_REPOSITORY", "value": "/models"} in tr["env"]
    cache = next(m["mountPath"] for m in tr["volumeMounts"] if m["name"] == "cache")
    assert f"GLOTTA_CACHE={cache}" in (ROOT / "Dockerfile").read_text()  # the launcher's log is writable
    (load,) = args.model
    assert (ROOT / "model_repository" / load / "config.pbtxt").is_file()
    assert f"--model={load}" in _container("glotta-gateway")["args"]


def test_autoscaling_and_monitoring_name_what_is_exported():
    families = {m.name for m in REGISTRY.collect()}
    hpa = _one("HorizontalPodAutoscaler", "glotta-triton")
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
    assert metric == "glotta_queue_depth" and metric in families
    assert hpa["spec"]["scaleTargetRef"]["name"] == "glotta-triton"
    rules = yaml.safe_load(_one("ConfigMap", "prometheus-adapter-glotta")["data"]["config.yaml"])
    assert rules["externalRules"][0]["name"]["as"] == metric and metric in rules["externalRules"][0]["seriesQuery"]
    for name, port in (("glotta-gateway", "http"), ("glotta-triton", "metrics")):
        monitor, svc = _one("ServiceMonitor", name), _one("Service", name)
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        labels = monitor["spec"]["selector"]["matchLabels"]
        assert labels.items() <= svc["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == port in {p["name"] for p in svc["spec"]["ports"]}
    assert {r.path for r in health_router.routes} >= {"/metrics"}


def test_every_manifest_file_is_read():
    assert {d["kind"] for d in DOCS} >= {"Deployment", "Service", "PersistentVolumeClaim", "HorizontalPodAutoscaler",
                                         "ConfigMap", "ServiceMonitor"}
    assert len(list(Path(ROOT / "deploy").glob("*.yaml"))) == 3
