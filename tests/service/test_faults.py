"""A broken variant is reported and fenced off; every other variant keeps serving.

Readiness: `/health/ready` is 200 while at least one variant serves (a replica with one
broken variant still takes traffic for the rest) and lists the failed ones with their
reasons; `/v2/models/{name}/ready` and requests to a failed variant answer 503 with the
reason; `GET /v1/models` shows state "failed" and the reason.
"""

import shutil
import threading

import pytest
from conftest import toy_graph, wait_until_async

TEXT = "a quietly devastating film"


def broken(models_dir, tmp_path, how: str):
    shutil.copytree(models_dir / "tiny-bert", tmp_path / "good")
    bad = tmp_path / "bad"
    shutil.copytree(models_dir / "tiny-bert", bad)
    if how == "corrupt model.onnx":
        (bad / "model.onnx").write_bytes((bad / "model.onnx").read_bytes()[:500])
    elif how == "missing tokenizer":
        (bad / "tokenizer.json").unlink()
    elif how == "labels disagree with the graph":
        toy_graph(bad / "model.onnx", width=3)
    elif how == "graph lacks attention_mask":
        toy_graph(bad / "model.onnx", inputs=("input_ids",))
    elif how == "manifest is not JSON":
        (bad / "variant.json").write_text("{labels: [")
    return tmp_path


@pytest.mark.parametrize("how, reason", [
    ("corrupt model.onnx", "model.onnx"),
    ("missing tokenizer", "missing tokenizer.json"),
    ("labels disagree with the graph", "lists 2 labels but model.onnx scores 3"),
    ("graph lacks attention_mask", "lacks the inputs attention_mask"),
    ("manifest is not JSON", "variant.json"),
])
def test_a_broken_variant_is_failed_with_its_reason_and_the_others_serve(client_for, models_dir, tmp_path, how, reason):
    client = client_for(broken(models_dir, tmp_path, how))
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["good"]["state"] == "ready"
    assert listed["bad"]["state"] == "failed" and reason in listed["bad"]["reason"], listed["bad"]["reason"]
    assert client.post("/v1/models/good/classify", json={"inputs": [TEXT]}).status_code == 200
    refused = client.post("/v1/models/bad/classify", json={"inputs": [TEXT]})
    assert refused.status_code == 503 and reason in refused.json()["error"]
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["models"] == ["good"]
    assert reason in ready.json()["failed"]["bad"]
    assert client.get("/v2/models/bad/ready").status_code == 503
    assert client.get("/v2/models/good/ready").status_code == 200


def test_a_toy_graph_that_agrees_with_its_manifest_serves(client_for, models_dir, tmp_path):
    # The fault cases above fail for the reason named, not because toy graphs never load.
    shutil.copytree(models_dir / "tiny-bert", tmp_path / "toy")
    toy_graph(tmp_path / "toy" / "model.onnx", width=2)
    client = client_for(tmp_path)
    assert client.post("/v1/models/toy/classify", json={"inputs": [TEXT]}).status_code == 200


def test_a_variant_folder_deleted_while_serving_is_retired(client_for, models_dir, tmp_path):
    for name in ("keep", "doomed"):
        shutil.copytree(models_dir / "tiny-bert", tmp_path / name)
    client = client_for(tmp_path, watch_seconds=0.05)
    assert client.post("/v1/models/doomed/classify", json={"inputs": [TEXT]}).status_code == 200
    shutil.rmtree(tmp_path / "doomed")

    async def retired_and_published():  # the folder watcher's last step: the gauge goes to 0
        return 'slimserve_model_ready{model="doomed"} 0.0' in (await client.client.get("/metrics")).text

    client.wait(wait_until_async(retired_and_published, "the folder watcher to retire doomed"))
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["doomed"]["state"] == "failed" and "removed from disk" in listed["doomed"]["reason"]
    refused = client.post("/v1/models/doomed/classify", json={"inputs": [TEXT]})
    assert refused.status_code == 503 and "removed from disk" in refused.json()["error"]
    assert client.post("/v1/models/keep/classify", json={"inputs": [TEXT]}).status_code == 200
    metrics = client.get("/metrics").text
    assert 'slimserve_model_ready{model="doomed"} 0.0' in metrics
    assert 'slimserve_model_ready{model="keep"} 1.0' in metrics


def test_a_model_that_raises_fails_only_its_own_requests(client):
    batcher = client.app.state.serving.variants["tiny-bert"].batcher
    real = batcher.backend.run

    def explode(arrays):
        raise RuntimeError("onnxruntime: bad allocation")

    batcher.backend.run = explode
    try:
        response = client.post("/v1/models/tiny-bert/classify", json={"inputs": [TEXT]})
        assert response.status_code == 424 and response.json()["error_type"] == "backend"
        assert client.post("/v1/models/tiny-bert-svd/classify", json={"inputs": [TEXT]}).status_code == 200
    finally:
        batcher.backend.run = real
    assert client.post("/v1/models/tiny-bert/classify", json={"inputs": [TEXT]}).status_code == 200


def test_a_request_in_flight_when_its_variant_is_retired_still_completes(client_for, models_dir, tmp_path, monkeypatch):
    from service import inference

    shutil.copytree(models_dir / "tiny-bert", tmp_path / "doomed")
    client = client_for(tmp_path, watch_seconds=0)  # retired by hand below, at a known moment
    real = inference.tokenize
    tokenizing, retired = threading.Event(), threading.Event()

    def held(*args):  # the request has found its variant and waits here until it is retired
        tokenizing.set()
        assert retired.wait(10), "the variant was not retired"
        return real(*args)

    monkeypatch.setattr(inference, "tokenize", held)

    async def retire_meanwhile():
        await wait_until_async(tokenizing.is_set, "the request to reach tokenization")
        shutil.rmtree(tmp_path / "doomed")
        gone = await client.app.state.serving.retire_vanished()
        retired.set()
        return gone

    response, gone = client.gather(client.client.post("/v1/models/doomed/classify", json={"inputs": [TEXT]}),
                                   retire_meanwhile())
    assert gone == ["doomed"] and response.status_code == 200, response.text


def test_a_cascade_over_a_retired_variant_is_not_ready(client_for, models_dir, tmp_path):
    for name in ("fast", "slow"):
        shutil.copytree(models_dir / "tiny-bert", tmp_path / name)
    cascades = {"both": {"fast": "fast", "reference": "slow", "threshold": 0.9}}
    client = client_for(tmp_path, watch_seconds=0, cascades=cascades)
    assert client.post("/v1/models/both/classify", json={"inputs": [TEXT]}).status_code == 200
    shutil.rmtree(tmp_path / "fast")
    client.wait(client.app.state.serving.retire_vanished())
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["both"]["state"] == "failed" and "needs fast" in listed["both"]["reason"]
    assert client.get("/v2/models/both/ready").status_code == 503
    assert client.post("/v1/models/both/classify", json={"inputs": [TEXT]}).status_code == 503
    assert "both" not in client.get("/health/ready").json()["models"]
