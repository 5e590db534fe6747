"""Every PromQL expression of the Grafana dashboard, evaluated by a real Prometheus that
scrapes a live service with tiny variants, shadow sampling, a cascade and a route."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from service.routes import choose, point_of

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "slimserve.json"
VARIANTS = {"tiny-bert", "tiny-bert-svd", "tiny-roberta-int8"}
SPLIT = {"tiny-bert": 90, "tiny-bert-svd": 10}  # the route "split", a canary
# A client key that lands on each arm, so every arm gets traffic on every round.
KEYS = {arm: next(k for k in map(str, range(1000)) if choose(SPLIT, point_of("split", k)) == arm) for arm in SPLIT}
# Which models a panel's series must cover, by the metric family its query reads.
EXPECTED = [
    ("slimserve_route_", set(SPLIT)),
    ("slimserve_cascade_", {"cascade"}),
    ("slimserve_shadow_", VARIANTS - {"tiny-bert"}),  # the reference is not compared with itself
    ("slimserve_model_accuracy", {"tiny-bert"}),  # the one variant evaluated below
    ("slimserve_process_", set()),
    ("slimserve_requests_total", VARIANTS | {"cascade"}),
    ("slimserve_request_duration", VARIANTS | {"cascade"}),
    ("slimserve_", VARIANTS),
]
PROMETHEUS = shutil.which("prometheus")


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p["targets"]]


def family(name: str) -> str:
    return re.sub(r"_(bucket|sum|count|total)$", "", name)


def expected_models(expr: str) -> set[str]:
    names = re.findall(r"slimserve_\w+", expr)
    # A route's panel covers its arms, whichever per-model metric it reads of them.
    first = next((name for name in names if name.startswith("slimserve_route_")), names[0])
    return next(models for prefix, models in EXPECTED if first.startswith(prefix))


def test_dashboard_queries_use_only_exported_metrics(fake_client):
    # Every family has a TYPE line, even before its first sample.
    lines = fake_client.get("/metrics").text.splitlines()
    families = {family(line.split()[2]) for line in lines if line.startswith("# TYPE ")}
    for title, expr in dashboard_queries():
        for name in re.findall(r"slimserve_\w+", expr):
            assert family(name) in families, f"{title}: {name} is not exported"


@pytest.mark.slow  # a real Prometheus scraping a live server
@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is not installed (Debian package 'prometheus')")
def test_every_dashboard_query_returns_series_for_its_variants(live_server, models_copy, tmp_path):
    from conftest import CORPUS, wait_until

    from compressor.evaluate import evaluate_all

    folder = models_copy
    (folder / "cascades.json").write_text(json.dumps(
        {"cascade": {"fast": "tiny-bert-svd", "reference": "tiny-bert", "threshold": 0.9}}))
    (folder / "routes.json").write_text(json.dumps({"split": SPLIT}))
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(CORPUS)))
    evaluate_all([folder / "tiny-bert"], data, None, 1)
    address = live_server(models=folder, shadow_rate=1.0, reference="tiny-bert")

    web = f"127.0.0.1:{free_port()}"
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: slimserve\n"
                      f"    static_configs:\n      - targets: ['{address}']\n")
    prometheus = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address={web}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://{address}", timeout=10) as service, \
                httpx.Client(base_url=f"http://{web}", timeout=10) as api:
            missing = ["(not asked yet)"]

            def every_query_has_its_series() -> bool:
                # Traffic keeps flowing across scrapes, so every rate() gets samples that differ.
                answers = []  # each labelled as it was answered, so live accuracy has data
                for model in [*VARIANTS, "cascade"]:
                    answers.append(service.post(f"/v1/models/{model}/classify", json={"inputs": CORPUS[:3]}))
                    assert answers[-1].status_code == 200
                    assert service.post(f"/v1/models/{model}/classify", json={"inputs": []}).status_code == 400
                for arm, key in KEYS.items():
                    for inputs, status in ((CORPUS[:3], 200), ([], 400)):
                        answer = service.post("/v1/models/split/classify", json={"inputs": inputs},
                                              headers={"x-route-key": key})
                        assert (answer.status_code, answer.headers["x-route-arm"] if status == 200 else arm) == \
                            (status, arm)
                        if status == 200:
                            answers.append(answer)
                feedback = [{"id": a.json()["id"], "label": a.json()["predictions"][0]["label"]} for a in answers]
                assert service.post("/v1/feedback", json={"feedback": feedback}).status_code == 200
                try:
                    missing[:] = queries_missing_series(api)
                except httpx.TransportError as exc:  # Prometheus is still starting
                    missing[:] = [f"Prometheus at {web} does not answer: {exc!r}"]
                return not missing

            wait_until(every_query_has_its_series, lambda: "every dashboard query to return series for its "
                       "variants; still failing:\n" + "\n".join(missing), timeout=60, interval=0.5)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=20)


def queries_missing_series(api: httpx.Client) -> list[str]:
    """The dashboard queries whose answer lacks a series for a model it should cover."""
    failures = []
    for title, expr in dashboard_queries():
        query = expr.replace("$model", ".*").replace("$route", ".*").replace("$__rate_interval", "30s")
        response = api.get("/api/v1/query", params={"query": query})
        if response.status_code == 503:
            return [f"Prometheus is starting: {response.text.strip()}"]
        result = response.json()
        assert result["status"] == "success", f"{title}: {result}"
        series = result["data"]["result"]
        found = {s["metric"].get("model") for s in series}
        wanted = expected_models(expr)
        if not series or not wanted <= found:
            failures.append(f"{title}: {query} → models {sorted(m for m in found if m)}, wanted {sorted(wanted)}")
    return failures


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
