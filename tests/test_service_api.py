"""The HTTP API over an in-process ASGI client, against freshly exported tiny variants."""

import json
import shutil

import pytest
from conftest import metric_value

TEXT = "it's a charming and often affecting journey."


def test_index_points_to_the_docs_and_the_main_routes(client):
    response = client.get("/")
    assert response.status_code == 200
    body = response.json()
    assert body == {"name": "slimserve", "version": body["version"], "docs": "/docs", "openapi": "/openapi.json",
                    "models": "/v1/models", "health": "/health/ready", "metrics": "/metrics"}
    for key in ("docs", "openapi", "models", "health", "metrics"):  # every pointer leads somewhere
        assert client.get(body[key]).status_code == 200, key
    assert "/" in client.get("/openapi.json").json()["paths"]


def test_lists_every_variant_with_its_manifest(client):
    body = client.get("/v1/models").json()
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {"tiny-bert", "tiny-bert-svd", "tiny-roberta-int8"}
    assert all(m["state"] == "ready" for m in by_name.values())
    assert by_name["tiny-bert-svd"]["manifest"]["method"] == "svd"
    assert by_name["tiny-roberta-int8"]["manifest"]["settings"]["quantize"] == "int8"


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-bert-svd", "tiny-roberta-int8"])
def test_classify_returns_a_distribution_over_the_labels(client, name):
    response = client.post(f"/v1/models/{name}/classify", json={"inputs": [TEXT, "the plot is thin"]})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == name and len(body["predictions"]) == 2
    for p in body["predictions"]:
        assert set(p["scores"]) == {"negative", "positive"}
        assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["label"] == max(p["scores"], key=p["scores"].get) and p["score"] == max(p["scores"].values())


def test_batch_answers_match_single_answers(client):
    texts = [TEXT, "ok", "an engrossing, funny and surprisingly tender portrait of a family falling apart"]
    batched = client.post("/v1/models/tiny-bert/classify", json={"inputs": texts}).json()["predictions"]
    for text, expected in zip(texts, batched):
        single = client.post("/v1/models/tiny-bert/classify", json={"inputs": [text]}).json()["predictions"][0]
        assert single["scores"] == pytest.approx(expected["scores"], abs=1e-5)


def test_text_pairs_and_top_k(client):
    body = client.post("/v1/models/tiny-bert/classify", json={
        "inputs": [{"text": "the plot is thin", "text_pair": "the acting is wooden"}, {"text": "alone"}], "top_k": 1,
    }).json()
    assert [len(p["scores"]) for p in body["predictions"]] == [1, 1]
    assert all(p["label"] in p["scores"] for p in body["predictions"])


def test_truncate_false_refuses_long_inputs(client):
    long_text = " ".join(["charming"] * 200)
    assert client.post("/v1/models/tiny-bert/classify", json={"inputs": [long_text]}).status_code == 200
    response = client.post("/v1/models/tiny-bert/classify", json={"inputs": ["ok", long_text], "truncate": False})
    assert response.status_code == 413
    assert response.json()["error_type"] == "too_large" and "inputs[1]" in response.json()["error"]


@pytest.mark.parametrize("body, status, error_type, mentions", [
    ({"inputs": []}, 400, "empty", "inputs"),
    ({"inputs": "just a string"}, 422, "validation", "inputs"),
    ({"inputs": [1, 2]}, 422, "validation", "inputs.0"),
    ({"inputs": [TEXT], "top_k": 0}, 422, "validation", "top_k"),
    ({"inputs": [TEXT], "truncate": "yes"}, 422, "validation", "truncate"),
    ({"inputs": [{"text_pair": "no first text"}]}, 422, "validation", "text"),
    ({"texts": [TEXT]}, 422, "validation", "inputs"),
    ({"inputs": [TEXT], "Foo": 1}, 422, "validation", "Foo"),
    ({"inputs": [TEXT], "top_k": True}, 422, "validation", "top_k"),
    # Raw JSON text: lone surrogates, which JSON can escape but no tokenizer can read.
    (r'{"inputs": ["\ud800"]}', 422, "validation", "inputs.0: text is not valid Unicode"),
    (r'{"inputs": [{"text": "a", "text_pair": "\udfff"}]}', 422, "validation", "inputs.0.text_pair"),
])
def test_bad_bodies_get_a_json_error_naming_the_field(client, body, status, error_type, mentions):
    if isinstance(body, str):
        response = client.post("/v1/models/tiny-bert/classify", content=body.encode(),
                               headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/models/tiny-bert/classify", json=body)
    assert response.status_code == status
    assert response.json()["error_type"] == error_type
    assert mentions in response.json()["error"]


def test_malformed_json_is_a_422(client):
    response = client.post("/v1/models/tiny-bert/classify", content=b'{"inputs": [',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation" and "JSON" in response.json()["error"]


def test_bodies_the_parser_refuses_are_422s(client):
    no_type = client.post("/v1/models/tiny-bert/classify", content=b'{"inputs": ["a"]}')
    assert no_type.status_code == 422 and "content-type: application/json" in no_type.json()["error"]
    latin = client.post("/v1/models/tiny-bert/classify", content='{"inputs": ["café"]}'.encode("latin-1"),
                        headers={"content-type": "application/json; charset=latin-1"})
    assert latin.status_code == 422 and latin.json()["error_type"] == "validation"
    wrong_method = client.get("/v1/models/tiny-bert/classify")
    assert wrong_method.status_code == 405 and wrong_method.json()["error_type"] == "method_not_allowed"


def test_unknown_model_and_route(client):
    response = client.post("/v1/models/nope/classify", json={"inputs": [TEXT]})
    assert response.status_code == 404 and response.json() == {"error": "model 'nope' not found", "error_type": "not_found"}
    assert client.get("/v1/nothing-here").json()["error_type"] == "not_found"


def test_one_model_is_its_entry_in_the_list(client_for, models_dir, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(models_dir, folder)
    shutil.copytree(models_dir / "tiny-bert", folder / "broken")
    (folder / "broken" / "model.onnx").write_bytes(b"not a model")
    (folder / "cascades.json").write_text(json.dumps({
        "fast-then-bert": {"fast": "tiny-bert-svd", "reference": "tiny-bert", "threshold": 0.9},
        "needs-missing": {"fast": "tiny-bert-svd", "reference": "nope", "threshold": 0.5},
    }))
    client = client_for(folder)
    listed = client.get("/v1/models").json()["models"]
    assert {m["name"] for m in listed} >= {"tiny-bert", "broken", "fast-then-bert", "needs-missing"}
    for entry in listed:
        response = client.get(f"/v1/models/{entry['name']}")
        assert response.status_code == 200 and response.json() == entry
    assert client.get("/v1/models/fast-then-bert").json()["cascade"]["fast"] == "tiny-bert-svd"
    assert client.get("/v1/models/broken").json()["state"] == "failed"


def test_one_unknown_model_is_a_404(client):
    response = client.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nope' not found", "error_type": "not_found"}


def test_too_many_inputs_is_a_413(client_for):
    client = client_for(max_inputs=3)
    response = client.post("/v1/models/tiny-bert/classify", json={"inputs": ["a"] * 4})
    assert response.status_code == 413 and "limit is 3" in response.json()["error"]


def test_health(client, client_for, tmp_path):
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and len(ready.json()["models"]) == 3
    empty = client_for(tmp_path)
    assert empty.get("/health/live").status_code == 200
    assert empty.get("/health/ready").status_code == 503
    assert empty.get("/health/ready").json()["error_type"] == "unavailable"


def test_a_broken_variant_is_reported_and_the_others_serve(client_for, models_dir, tmp_path):
    import shutil

    shutil.copytree(models_dir / "tiny-bert", tmp_path / "good")
    shutil.copytree(models_dir / "tiny-bert", tmp_path / "bad")
    (tmp_path / "bad" / "model.onnx").write_bytes(b"not a model")
    (tmp_path / ".in-progress.tmp-1").mkdir()  # the compressor's work folder: ignored
    client = client_for(tmp_path)
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"good", "bad"}
    assert models["bad"]["state"] == "failed" and models["bad"]["reason"]
    assert client.post("/v1/models/good/classify", json={"inputs": [TEXT]}).status_code == 200
    response = client.post("/v1/models/bad/classify", json={"inputs": [TEXT]})
    assert response.status_code == 503 and response.json()["error_type"] == "unavailable"


def test_metrics_count_requests_and_time_inference_per_model(client):
    client.post("/v1/models/tiny-bert/classify", json={"inputs": [TEXT, TEXT]})
    client.post("/v1/models/tiny-bert/classify", json={"inputs": []})
    client.post("/v1/models/no-such-model/classify", json={"inputs": [TEXT]})
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_requests_total", model="tiny-bert", status="200") == 1
    assert metric_value(text, "slimserve_requests_total", model="tiny-bert", status="400") == 1
    assert metric_value(text, "slimserve_requests_total", model="_unknown", status="404") == 1
    assert metric_value(text, "slimserve_request_duration_seconds_count", model="tiny-bert") == 2
    assert metric_value(text, "slimserve_inference_duration_seconds_count", model="tiny-bert") == 1
    assert metric_value(text, "slimserve_batch_size_sum", model="tiny-bert") == 2
    assert metric_value(text, "slimserve_inference_duration_seconds_bucket", model="tiny-bert", le="0.001") >= 0
    assert metric_value(text, "slimserve_model_info", model="tiny-bert-svd", method="svd") == 1
    assert metric_value(text, "slimserve_model_parameters", model="tiny-bert") > 0
    assert metric_value(text, "slimserve_model_ready", model="tiny-bert") == 1
    assert metric_value(text, "slimserve_process_resident_memory_bytes") > 0


def test_concurrent_requests_all_answer(client):
    requests = [client.client.post("/v1/models/tiny-bert-svd/classify", json={"inputs": [f"text number {i}"]})
                for i in range(16)]
    assert [r.status_code for r in client.gather(*requests)] == [200] * 16
