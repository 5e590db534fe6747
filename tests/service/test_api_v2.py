"""The Open Inference Protocol: JSON over the in-process client, and the official
Triton client against a real server on loopback; both on fake variants (tests/fakes.py),
since the protocol's shape is the point, not the graph."""

import json
import struct

import numpy as np
import pytest
from fakes import FakeBackend, fake_logits

TEXT = "it's a charming and often affecting journey."


def infer_body(texts, **extra):
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}], **extra}


def test_server_and_model_metadata(fake_client):
    assert fake_client.get("/v2").json()["extensions"] == ["classification", "binary_tensor_data"]
    assert fake_client.get("/v2/health/live").json() == {"live": True}
    assert fake_client.get("/v2/health/ready").json() == {"ready": True}
    meta = fake_client.get("/v2/models/plain").json()
    assert meta["name"] == "plain" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == ["text", "text_pair"]
    assert meta["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [-1, 2]}
    assert fake_client.get("/v2/models/plain/versions/1/ready").json() == {"name": "plain", "ready": True}
    missing = fake_client.get("/v2/models/nope/ready")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}


def test_infer_returns_the_models_logits_and_v1s_probabilities(fake_client, fake_models_dir):
    v1 = fake_client.post("/v1/models/plain/classify", json={"inputs": [TEXT, "dull"]}).json()
    response = fake_client.post("/v2/models/plain/infer", json=infer_body([TEXT, "dull"], id="r1"))
    body = response.json()
    assert response.status_code == 200 and body["id"] == "r1" and body["model_name"] == "plain"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["logits"]["shape"] == [2, 2] and outputs["logits"]["datatype"] == "FP32"
    assert outputs["logits"]["data"] == fake_logits(fake_models_dir / "plain", [TEXT, "dull"]).ravel().tolist()
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(2, 2)
    expected = [[p["scores"]["negative"], p["scores"]["positive"]] for p in v1["predictions"]]
    assert np.allclose(probabilities, expected, atol=1e-6)
    assert response.headers["x-model-digest"].startswith("sha256:")


def test_classification_parameter_and_text_pairs(fake_client):
    body = infer_body([TEXT])
    body["inputs"].append({"name": "text_pair", "shape": [1], "datatype": "BYTES", "data": ["and a second one"]})
    body["outputs"] = [{"name": "probabilities", "parameters": {"classification": 2}}]
    out = fake_client.post("/v2/models/plain/infer", json=body).json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 2]
    first, second = (s.split(":") for s in out["data"])
    assert float(first[0]) >= float(second[0]) and {first[2], second[2]} == {"negative", "positive"}
    assert abs(float(first[0]) + float(second[0]) - 1) < 1e-4


def test_binary_tensors_in_and_out(fake_client):
    texts = [TEXT, "dull"]
    blob = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    header = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    response = fake_client.post("/v2/models/plain/infer", content=header + blob,
                           headers={"inference-header-content-length": str(len(header))})
    assert response.status_code == 200
    size = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:size])
    logits = np.frombuffer(response.content[size:], dtype=np.float32).reshape(meta["outputs"][0]["shape"])
    json_logits = fake_client.post("/v2/models/plain/infer", json=infer_body(texts)).json()["outputs"][0]["data"]
    assert np.allclose(logits.ravel(), json_logits, atol=1e-6)


@pytest.mark.parametrize("body, status, mentions", [
    (infer_body([]), 400, "at least one text"),
    ({"inputs": []}, 422, "'text' is required"),
    (infer_body([1]), 422, "inputs.text.0: must be a string"),
    ({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}, 422, "needs 3 elements"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "INT64", "data": [1]}]}, 422, "must be BYTES"),
    ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}, 422, "unknown input"),
    (infer_body(["a"], outputs=[{"name": "embeddings"}]), 422, "unknown output"),
    (infer_body(["a"], outputs=[{"name": "logits", "parameters": {"classification": 0}}]), 422, "positive integer"),
    (infer_body(["a"], parameters={"truncate": "yes"}), 422, "parameters.truncate"),
    ({"inputs": "text"}, 422, "inputs"),
])
def test_bad_requests_get_a_v2_error(fake_client, body, status, mentions):
    response = fake_client.post("/v2/models/plain/infer", json=body)
    assert response.status_code == status
    assert set(response.json()) == {"error"} and mentions in response.json()["error"]


def test_unknown_model_and_version(fake_client):
    assert fake_client.post("/v2/models/nope/infer", json=infer_body(["a"])).status_code == 404
    assert fake_client.post("/v2/models/plain/versions/2/infer", json=infer_body(["a"])).status_code == 404


def test_tritonclient_round_trip(live_server, fake_models_dir):
    triton = pytest.importorskip("tritonclient.http", reason="the Triton client is in the [dev] extra")

    client = triton.InferenceServerClient(url=live_server(FakeBackend, models=fake_models_dir))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("plain")
    assert client.get_model_metadata("plain")["outputs"][0]["name"] == "logits"
    texts = np.array([TEXT.encode(), b"the plot is thin"], dtype=np.object_)
    for binary in (True, False):
        text = triton.InferInput("text", [2], "BYTES")
        text.set_data_from_numpy(texts, binary_data=binary)
        outputs = [triton.InferRequestedOutput("logits", binary_data=binary),
                   triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=1)]
        result = client.infer("plain", [text], outputs=outputs)
        logits = result.as_numpy("logits")
        assert logits.shape == (2, 2) and logits.dtype == np.float32
        top = result.as_numpy("probabilities")
        assert top.shape == (2, 1)
        entry = top[0, 0].decode() if isinstance(top[0, 0], bytes) else top[0, 0]  # bytes when binary
        _score, index, label = entry.split(":")
        assert int(index) == int(logits[0].argmax()) and label in ("negative", "positive")
    default = client.infer("plain", [text])  # no outputs named: all of them, as JSON
    assert default.as_numpy("logits").shape == (2, 2) and default.as_numpy("probabilities").shape == (2, 2)
    with pytest.raises(triton.InferenceServerException, match="not found"):
        client.infer("nope", [text])
    client.close()
