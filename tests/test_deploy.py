"""Deployment files: Kubernetes manifests against the Kubernetes schemas, and the KServe
example's container against the core Container schema."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
VERSION = "1.30.0"  # a release most clusters run or have passed


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("doc", documents(DEPLOY / "k8s" / "slimserve.yaml"), ids=lambda d: d["kind"])
def test_kubernetes_manifests_match_the_schemas(doc):
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_probes_use_the_service_health_routes():
    deployment = next(d for d in documents(DEPLOY / "k8s" / "slimserve.yaml") if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics" and annotations["prometheus.io/port"] == "8000"


def test_kserve_predictor_is_a_valid_pod_speaking_v2():
    (service,) = documents(DEPLOY / "kserve" / "inferenceservice.yaml")
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
    containers = service["spec"]["predictor"]["containers"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": {"containers": containers}}
    kubernetes_validate.validate(pod, VERSION, strict=True)
    assert containers[0]["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_a_broken_manifest_is_caught():
    doc = documents(DEPLOY / "k8s" / "slimserve.yaml")[0]
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSION, strict=True)
