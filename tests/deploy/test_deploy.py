"""Deployment files: Kubernetes manifests against the Kubernetes schemas, the KServe
example's container against the core Container schema, and the compose file against
`docker compose config` and the Compose specification's schema."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("yaml", reason="the manifests are read with pyyaml (the [dev] extra)")
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the [dev] extra")

import kubernetes_validate
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
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


def test_compose_stack_is_wired():
    """The compose file's structure: what `docker compose up` depends on (the stack itself
    is run by scripts, not by the unit tests)."""
    root = DEPLOY.parent
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"slimserve", "prometheus", "grafana", "load"}
    assert services["slimserve"]["build"]["context"] == "." and "8000:8000" in services["slimserve"]["ports"]
    assert "TORCH_INDEX" in services["slimserve"]["build"]["args"]
    assert services["prometheus"]["depends_on"]["slimserve"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert services["load"]["profiles"] == ["load"]
    for name in ("prometheus", "grafana"):
        for mount in services[name]["volumes"]:
            source = mount.split(":")[0]
            assert (root / source).exists(), f"{name} mounts {source}, which does not exist"
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["slimserve:8000"]
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads((DEPLOY / "grafana/dashboards/slimserve.json").read_text())
    assert all(p["datasource"]["uid"] == uid for p in dashboard["panels"])  # panels find the provisioned source
    assert "load.py" in services["load"]["command"] and (root / "benchmarks/load.py").is_file()


def compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], check=False, capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


# The Compose specification's JSON schema as Debian's docker-compose package ships it.
COMPOSE_SCHEMAS = sorted(Path("/usr/lib/python3/dist-packages/compose/config").glob("compose_spec.json"))


@pytest.mark.slow  # runs docker compose
@pytest.mark.skipif(compose_command() is None, reason="no `docker compose` or `docker-compose` here "
                    "(.ci/run installs Debian's docker-compose)")
def test_compose_config_accepts_the_stack():
    result = subprocess.run([*compose_command(), "--profile", "load", "config", "-q"], cwd=DEPLOY.parent,
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not COMPOSE_SCHEMAS, reason="the Compose specification's schema is not installed "
                    "(Debian's docker-compose package ships it; .ci/run installs it)")
def test_the_compose_file_matches_the_compose_specification():
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMAS[0].read_text())
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())
    jsonschema.validate(compose, schema)
    compose["services"]["grafana"]["depends_on"]["prometheus"]["condition"] = "service_healty"
    with pytest.raises(jsonschema.ValidationError, match="service_healty"):  # the check can fail
        jsonschema.validate(compose, schema)


@pytest.mark.slow  # a live server under the load generator
def test_the_load_profile_drives_every_ready_variant(live_server, models_dir):
    import subprocess
    import sys

    address = live_server(models=models_dir)
    result = subprocess.run([sys.executable, str(DEPLOY.parent / "benchmarks" / "load.py"), "--url", f"http://{address}",
                             "--concurrency", "2", "--duration", "4"], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert set(lines) >= {"tiny-bert", "tiny-bert-svd", "tiny-roberta-int8"}
    assert all("'errors': 0" in summary and "'ok': 0" not in summary for summary in lines.values())
