"""GET /v1/stats over the fake backend: the live figures per model, read off the metrics."""

import pytest
from conftest import fake_variants, wait_for_metric

from service.api_stats import bucket_quantile

TEXT = "it's a charming and often affecting journey."
INF = float("inf")


def by_model(client) -> dict[str, dict]:
    response = client.get("/v1/stats")
    assert response.status_code == 200
    body = response.json()
    assert "estimate" in body["latency"] and "buckets" in body["latency"]
    return {m["model"]: m for m in body["models"]}


def test_quantiles_interpolate_within_a_bucket_as_promql_does():
    # 10 observations in (1, 2], 10 in (2, 4]
    buckets = [(1.0, 0), (2.0, 10), (4.0, 20), (INF, 20)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(2.0)
    assert bucket_quantile(0.25, buckets) == pytest.approx(1.5)
    assert bucket_quantile(0.99, buckets) == pytest.approx(2 + 2 * 9.8 / 10)
    # in the first bucket the lower bound is 0
    assert bucket_quantile(0.5, [(0.5, 4), (INF, 4)]) == pytest.approx(0.25)
    # past the last finite bound: that bound, as nothing tells how far beyond
    assert bucket_quantile(0.99, [(1.0, 1), (2.0, 1), (INF, 5)]) == 2.0
    assert bucket_quantile(0.5, [(1.0, 0), (INF, 0)]) is None


def test_counts_requests_errors_and_latency_per_model(fake_client):
    stats = by_model(fake_client)
    assert set(stats) == {"plain", "svd", "int8"}
    assert stats["svd"] == {"model": "svd", "requests": 0, "errors": 0, "p50_seconds": None, "p99_seconds": None,
                            "shadow_inputs": 0, "shadow_agreement": None, "feedback_accuracy": None}
    for _ in range(3):
        assert fake_client.post("/v1/models/svd/classify", json={"inputs": [TEXT]}).status_code == 200
    assert fake_client.post("/v1/models/svd/classify", json={"inputs": []}).status_code == 400
    stats = by_model(fake_client)
    svd = stats["svd"]
    assert (svd["requests"], svd["errors"]) == (4, 1)
    assert 0 < svd["p50_seconds"] <= svd["p99_seconds"] <= 5.0
    assert stats["plain"]["requests"] == 0 and stats["plain"]["p50_seconds"] is None


def test_reports_shadow_agreement_with_the_reference(fake_client_for):
    client = fake_client_for(shadow_rate=1.0, reference="plain")
    for _ in range(2):
        client.post("/v1/models/int8/classify", json={"inputs": [TEXT, "the plot is thin"]})
    wait_for_metric(client, "slimserve_shadow_inputs_total", 4.0, model="int8")
    int8 = by_model(client)["int8"]
    assert int8["shadow_inputs"] == 4
    assert int8["shadow_agreement"] == 1.0  # the fakes answer "sums" alike


def test_feedback_accuracy_is_the_live_gauge_and_null_before_any_label(fake_client):
    assert by_model(fake_client)["int8"]["feedback_accuracy"] is None
    answers = [fake_client.post("/v1/models/int8/classify", json={"inputs": [TEXT]}).json() for _ in range(4)]
    labels = [a["predictions"][0]["label"] for a in answers]
    other = next(label for label in answers[0]["predictions"][0]["scores"] if label != labels[0])
    items = [{"id": a["id"], "label": label} for a, label in zip(answers, [*labels[:3], other])]
    assert fake_client.post("/v1/feedback", json={"feedback": items}).status_code == 200
    stats = by_model(fake_client)
    assert stats["int8"]["feedback_accuracy"] == 0.75  # three of the four answers were right
    assert stats["svd"]["feedback_accuracy"] is None


def test_a_regression_model_has_no_shadow_agreement_share(fake_client_for, tmp_path):
    """Its agreement is a correlation over many inputs: counting none of them as agreeing
    would read as 0%."""
    scorer = {"task": "regression", "labels": ("score",)}
    client = fake_client_for(fake_variants(tmp_path / "models", plain=scorer, svd={**scorer, "method": "svd"}),
                             shadow_rate=1.0, reference="plain")
    client.post("/v1/models/svd/classify", json={"inputs": [TEXT]})
    wait_for_metric(client, "slimserve_shadow_inputs_total", 1.0, model="svd")
    svd = by_model(client)["svd"]
    assert svd["shadow_inputs"] == 1 and svd["shadow_agreement"] is None
