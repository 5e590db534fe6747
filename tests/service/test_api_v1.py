"""The HTTP API over an in-process ASGI client. Most tests serve on FakeBackend
(`fake_client`: no torch, no onnx, see test_service_imports.py); those over `client` use
freshly exported tiny variants and skip where torch is missing."""

import json
import shutil
from functools import partial

import pytest
from conftest import metric_value
from fakes import FakeBackend

from variant.backends.ort import OrtBackend

TEXT = "it's a charming and often affecting journey."
FAKES = ("plain", "svd", "int8")


def test_index_points_to_the_docs_and_the_main_routes(fake_client):
    response = fake_client.get("/")
    assert response.status_code == 200
    body = response.json()
    assert body == {"name": "slimserve", "version": body["version"], "docs": "/docs", "openapi": "/openapi.json",
                    "models": "/v1/models", "health": "/health/ready", "metrics": "/metrics"}
    for key in ("docs", "openapi", "models", "health", "metrics"):  # every pointer leads somewhere
        assert fake_client.get(body[key]).status_code == 200, key
    assert "/" in fake_client.get("/openapi.json").json()["paths"]


def test_lists_every_variant_with_its_manifest(fake_client):
    body = fake_client.get("/v1/models").json()
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == set(FAKES)
    assert all(m["state"] == "ready" for m in by_name.values())
    assert by_name["svd"]["manifest"]["method"] == "svd"
    assert by_name["int8"]["manifest"]["settings"]["quantize"] == "int8"


@pytest.mark.parametrize("name", FAKES)
def test_classify_returns_a_distribution_over_the_labels(fake_client, name):
    response = fake_client.post(f"/v1/models/{name}/classify", json={"inputs": [TEXT, "the plot is thin"]})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == name and len(body["predictions"]) == 2
    for p in body["predictions"]:
        assert set(p["scores"]) == {"negative", "positive"}
        assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["label"] == max(p["scores"], key=p["scores"].get) and p["score"] == max(p["scores"].values())


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-bert-svd", "tiny-roberta-int8"])
def test_exported_variants_classify(client, name):
    response = client.post(f"/v1/models/{name}/classify", json={"inputs": [TEXT, "the plot is thin"]})
    assert response.status_code == 200
    for p in response.json()["predictions"]:
        assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_batch_answers_match_single_answers(client):
    texts = [TEXT, "ok", "an engrossing, funny and surprisingly tender portrait of a family falling apart"]
    batched = client.post("/v1/models/tiny-bert/classify", json={"inputs": texts}).json()["predictions"]
    for text, expected in zip(texts, batched):
        single = client.post("/v1/models/tiny-bert/classify", json={"inputs": [text]}).json()["predictions"][0]
        assert single["scores"] == pytest.approx(expected["scores"], abs=1e-5)


def test_text_pairs_and_top_k(fake_client):
    body = fake_client.post("/v1/models/plain/classify", json={
        "inputs": [{"text": "the plot is thin", "text_pair": "the acting is wooden"}, {"text": "alone"}], "top_k": 1,
    }).json()
    assert [len(p["scores"]) for p in body["predictions"]] == [1, 1]
    assert all(p["label"] in p["scores"] for p in body["predictions"])


def test_truncate_false_refuses_long_inputs(fake_client):
    long_text = " ".join(["charming"] * 200)
    assert fake_client.post("/v1/models/plain/classify", json={"inputs": [long_text]}).status_code == 200
    response = fake_client.post("/v1/models/plain/classify", json={"inputs": ["ok", long_text], "truncate": False})
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
def test_bad_bodies_get_a_json_error_naming_the_field(fake_client, body, status, error_type, mentions):
    if isinstance(body, str):
        response = fake_client.post("/v1/models/plain/classify", content=body.encode(),
                                    headers={"content-type": "application/json"})
    else:
        response = fake_client.post("/v1/models/plain/classify", json=body)
    assert response.status_code == status
    assert response.json()["error_type"] == error_type
    assert mentions in response.json()["error"]


def test_malformed_json_is_a_422(fake_client):
    response = fake_client.post("/v1/models/plain/classify", content=b'{"inputs": [',
                                headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation" and "JSON" in response.json()["error"]


def test_bodies_the_parser_refuses_are_422s(fake_client):
    no_type = fake_client.post("/v1/models/plain/classify", content=b'{"inputs": ["a"]}')
    assert no_type.status_code == 422 and "content-type: application/json" in no_type.json()["error"]
    latin = fake_client.post("/v1/models/plain/classify", content='{"inputs": ["café"]}'.encode("latin-1"),
                        headers={"content-type": "application/json; charset=latin-1"})
    assert latin.status_code == 422 and latin.json()["error_type"] == "validation"
    wrong_method = fake_client.get("/v1/models/plain/classify")
    assert wrong_method.status_code == 405 and wrong_method.json()["error_type"] == "method_not_allowed"


def test_unknown_model_and_route(fake_client):
    response = fake_client.post("/v1/models/nope/classify", json={"inputs": [TEXT]})
    assert response.status_code == 404 and response.json() == {"error": "model 'nope' not found", "error_type": "not_found"}
    assert fake_client.get("/v1/nothing-here").json()["error_type"] == "not_found"


def fake_or_ort(path, runtime):
    """FakeBackend, except for a variant named `broken`, which ONNX Runtime loads (and fails to)."""
    return OrtBackend(path) if path.parent.name == "broken" else FakeBackend(path, runtime)


def with_a_broken_variant(fake_models_dir, folder):
    shutil.copytree(fake_models_dir, folder)
    shutil.copytree(fake_models_dir / "plain", folder / "broken")
    (folder / "broken" / "model.onnx").write_bytes(b"not a model")
    return folder


def test_one_model_is_its_entry_in_the_list(make_client, fake_models_dir, tmp_path):
    folder = with_a_broken_variant(fake_models_dir, tmp_path / "models")
    (folder / "cascades.json").write_text(json.dumps({
        "fast-then-plain": {"fast": "svd", "reference": "plain", "threshold": 0.9},
        "needs-missing": {"fast": "svd", "reference": "nope", "threshold": 0.5},
    }))
    client = make_client(folder, fake_or_ort)
    listed = client.get("/v1/models").json()["models"]
    assert {m["name"] for m in listed} >= {"plain", "broken", "fast-then-plain", "needs-missing"}
    for entry in listed:
        response = client.get(f"/v1/models/{entry['name']}")
        assert response.status_code == 200 and response.json() == entry
    assert client.get("/v1/models/fast-then-plain").json()["cascade"]["fast"] == "svd"
    assert client.get("/v1/models/broken").json()["state"] == "failed"


def test_client_facing_reasons_name_no_server_path(make_client, fake_models_dir, tmp_path, caplog):
    folder = with_a_broken_variant(fake_models_dir, tmp_path / "models")
    client = make_client(folder, fake_or_ort)
    assert str(folder) in caplog.text  # the log keeps ONNX Runtime's full message
    shown = [
        client.get("/v1/models/broken").json()["reason"],
        client.get("/health/ready").json()["failed"]["broken"],
        client.post("/v1/models/broken/classify", json={"inputs": [TEXT]}).json()["error"],
        client.get("/v2/models/broken/ready").json()["error"],
    ]
    for text in shown:
        assert "broken/model.onnx" in text and str(tmp_path) not in text, text
        assert " /" not in text and "'/" not in text, text  # no absolute path of any kind


def test_one_unknown_model_is_a_404(fake_client):
    response = fake_client.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nope' not found", "error_type": "not_found"}


def test_too_many_inputs_is_a_413(fake_client_for):
    client = fake_client_for(max_inputs=3)
    response = client.post("/v1/models/plain/classify", json={"inputs": ["a"] * 4})
    assert response.status_code == 413 and "limit is 3" in response.json()["error"]


def test_a_body_over_the_limit_is_refused_in_the_shape_of_its_api_and_counted(fake_client_for):
    client = fake_client_for(max_body_bytes=1024)
    big = {"inputs": ["word " * 300]}
    v1 = client.post("/v1/models/plain/classify", json=big)
    assert v1.status_code == 413 and v1.json()["error_type"] == "too_large"
    v2 = client.post("/v2/models/plain/infer", json={"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": big["inputs"]}]})
    assert v2.status_code == 413 and set(v2.json()) == {"error"} and "limit is 1024" in v2.json()["error"]
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_requests_total", model="plain", status="413") == 2


def test_compare_reports_agreement_with_the_reference(fake_client):
    body = fake_client.post("/v1/compare", json={"inputs": [TEXT, "fine"]}).json()
    assert body["reference"] == "plain"  # the uncompressed variant
    results = {r["model"]: r for r in body["results"]}
    assert set(results) == set(FAKES) and results["plain"]["agreement"] == 1.0
    assert all(len(r["predictions"]) == 2 and r["latency_seconds"] > 0 for r in results.values())


@pytest.mark.parametrize("body, status, mentions", [
    ({"inputs": [TEXT], "models": ["nope"]}, 404, "'nope' not found"),
    ({"inputs": [TEXT], "models": []}, 422, "at least one variant"),
    ({"inputs": [], "models": ["plain"]}, 400, "at least one text"),
    ({"inputs": [TEXT], "reference": 3}, 422, "reference"),
    ({"inputs": [TEXT], "models": ["both"]}, 422, "'both' is a cascade"),
])
def test_compare_refuses_bad_requests(fake_client_for, body, status, mentions):
    client = fake_client_for(cascades={"both": {"fast": "svd", "reference": "plain", "threshold": 0.5}})
    response = client.post("/v1/compare", json=body)
    assert response.status_code == status and mentions in response.json()["error"]


def test_health(fake_client, fake_client_for, tmp_path):
    assert fake_client.get("/health/live").json() == {"status": "live"}
    ready = fake_client.get("/health/ready")
    assert ready.status_code == 200 and len(ready.json()["models"]) == 3
    empty = fake_client_for(tmp_path)
    assert empty.get("/health/live").status_code == 200
    assert empty.get("/health/ready").status_code == 503
    assert empty.get("/health/ready").json()["error_type"] == "unavailable"



def the_ready_lines_body(client) -> dict:
    from service.app import ready_message

    line = ready_message(client.app, "http://127.0.0.1:8000")
    assert line.startswith("slimserve ready on http://127.0.0.1:8000"), line
    return json.loads(line.split(" -d '", 1)[1].removesuffix("'"))


def test_the_ready_line_sends_a_classifier_a_text(fake_client):
    body = the_ready_lines_body(fake_client)
    assert body == {"inputs": ["a charming and often affecting journey"]}
    assert fake_client.post("/v1/models/plain/classify", json=body).status_code == 200


@pytest.mark.parametrize("task", ["regression", "multi_label"])
def test_the_ready_line_sends_a_cross_encoder_a_pair(make_client, fake_models_dir, tmp_path, task):
    from variant.manifest import read_manifest, write_manifest

    folder = shutil.copytree(fake_models_dir / "plain", tmp_path / "scorer")
    write_manifest(folder, read_manifest(folder).model_copy(update={"task": task, "labels": ["relevant"]}))
    client = make_client(tmp_path, partial(FakeBackend, width=1))
    body = the_ready_lines_body(client)
    assert body == {"inputs": [{"text": "is the journey worth taking",
                                "text_pair": "a charming and often affecting journey"}]}
    assert client.post("/v1/models/scorer/classify", json=body).status_code == 200


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


def test_metrics_count_requests_and_time_inference_per_model(fake_client):
    fake_client.post("/v1/models/plain/classify", json={"inputs": [TEXT, TEXT]})
    fake_client.post("/v1/models/plain/classify", json={"inputs": []})
    fake_client.post("/v1/models/no-such-model/classify", json={"inputs": [TEXT]})
    fake_client.get("/v2/models/plain")  # a metadata read: neither timed nor counted
    text = fake_client.get("/metrics").text
    assert metric_value(text, "slimserve_requests_total", model="plain", status="200") == 1
    assert metric_value(text, "slimserve_requests_total", model="plain", status="400") == 1
    assert metric_value(text, "slimserve_requests_total", model="_unknown", status="404") == 1
    assert metric_value(text, "slimserve_request_duration_seconds_count", model="plain") == 2
    assert metric_value(text, "slimserve_inference_duration_seconds_count", model="plain") == 1
    assert metric_value(text, "slimserve_batch_size_sum", model="plain") == 2
    assert metric_value(text, "slimserve_inference_duration_seconds_bucket", model="plain", le="+Inf") == 1
    assert metric_value(text, "slimserve_model_info", model="svd", method="svd") == 1
    assert metric_value(text, "slimserve_model_parameters", model="plain") > 0
    assert metric_value(text, "slimserve_model_ready", model="plain") == 1
    assert metric_value(text, "slimserve_process_resident_memory_bytes") > 0


def test_concurrent_requests_all_answer(fake_client):
    requests = [fake_client.client.post("/v1/models/svd/classify", json={"inputs": [f"text number {i}"]})
                for i in range(16)]
    assert [r.status_code for r in fake_client.gather(*requests)] == [200] * 16


def test_stage_and_padding_metrics_per_run(fake_client, fake_models_dir):
    from variant.manifest import TOKENIZER_FILE
    from variant.tokenization import bucket, load_tokenizer

    texts = ["fine", TEXT]  # one run of two rows: the short one padded to the long one's bucket
    response = fake_client.post("/v1/models/plain/classify", json={"inputs": texts})
    assert float(response.headers["x-tokenization-time"]) > 0
    tokenizer = load_tokenizer(fake_models_dir / "plain" / TOKENIZER_FILE, 64)
    lengths = [sum(e.attention_mask) for e in tokenizer.encode_batch(texts)]
    real, slots = sum(lengths), 2 * bucket(max(lengths), 64)
    assert real < slots
    text = fake_client.get("/metrics").text
    assert metric_value(text, "slimserve_tokenization_duration_seconds_count", model="plain") == 1
    assert metric_value(text, "slimserve_queue_duration_seconds_count", model="plain") == 1
    assert metric_value(text, "slimserve_inference_duration_seconds_count", model="plain") == 1
    assert metric_value(text, "slimserve_input_tokens_sum", model="plain") == real
    assert metric_value(text, "slimserve_padded_tokens_sum", model="plain") == slots
    assert metric_value(text, "slimserve_token_slots_total", model="plain", kind="padding") == slots - real
    assert metric_value(text, "slimserve_padded_share_sum", model="plain") == pytest.approx((slots - real) / slots)
    assert metric_value(text, "slimserve_padded_share_count", model="plain") == 1
