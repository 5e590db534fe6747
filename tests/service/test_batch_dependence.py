"""A variant whose answers move with its batch (the manifest's batch_invariant) is reported
as such by /v1/compare, /v1/models and the metrics, not counted as plain disagreement."""

from conftest import metric_value


def test_compare_says_which_variants_answer_by_the_batch(fake_client):
    body = fake_client.post("/v1/compare", json={"inputs": ["a charming journey"], "models": ["svd", "int8"]}).json()
    flags = {r["model"]: r["batch_invariant"] for r in body["results"]}
    assert flags == {"svd": True, "int8": False}


def test_models_and_model_info_show_it(fake_client):
    models = {m["name"]: m["manifest"] for m in fake_client.get("/v1/models").json()["models"]}
    assert models["int8"]["batch_invariant"] is False and models["plain"]["batch_invariant"] is True
    text = fake_client.get("/metrics").text
    assert metric_value(text, "slimserve_model_info", model="int8", batch_invariant="false") == 1
    assert metric_value(text, "slimserve_model_info", model="plain", batch_invariant="true") == 1
