"""Input limits: whatever a client sends, the answer is a documented 4xx with the JSON
error shape (or a clean 424 when the model itself misbehaves), never a 500. On fake
variants (tests/fakes.py): the limits are the service's, not the graph's."""

import json

import pytest

V1 = "/v1/models/plain/classify"
V2 = "/v2/models/plain/infer"


def v2_body(texts) -> dict:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}


def post_raw(client, url, content: bytes):
    return client.post(url, content=content, headers={"content-type": "application/json"})


def nested(depth: int) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"


CASES = [
    # (what, url, raw body, status, error_type, the message names)
    ("non-UTF-8 bytes", V1, b'{"inputs": ["caf\xe9"]}', 422, "validation", "UTF-8"),
    ("non-UTF-8 bytes, v2", V2, b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["\xff"]}]}',
     422, "validation", "UTF-8"),
    ("deeply nested JSON", V1, nested(100_000), 422, "validation", "body"),
    ("deeply nested JSON, v2", V2, nested(100_000), 422, "validation", "body"),
    ("a 5,000-digit number", V1, b'{"inputs": ["a"], "top_k": 1' + b"0" * 5000 + b"}", 422, "validation", "digits"),
    ("a number over float range", V1, b'{"inputs": ["a"], "top_k": 1e400}', 422, "validation", "top_k"),
    ("NaN literal", V1, b'{"inputs": ["a"], "top_k": NaN}', 422, "validation", "top_k"),
    ("a huge shape, v2", V2, json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [10**30],
                                                     "data": ["a"]}]}).encode(), 422, "validation", "shape"),
]


@pytest.mark.parametrize("what, url, body, status, error_type, mentions", CASES, ids=[c[0] for c in CASES])
def test_hostile_bodies_get_a_documented_4xx(fake_client, what, url, body, status, error_type, mentions):
    response = post_raw(fake_client, url, body)
    assert response.status_code == status, response.text
    error = response.json()
    assert mentions in error["error"]
    if url == V1:
        assert error["error_type"] == error_type


def test_inputs_per_request_are_capped(fake_client_for):
    client = fake_client_for(max_inputs=4)
    for url, body in ((V1, {"inputs": ["a"] * 5}), (V2, v2_body(["a"] * 5))):
        response = client.post(url, json=body)
        assert response.status_code == 413 and "limit is 4" in response.json()["error"]
    assert client.post(V1, json={"inputs": ["a"] * 4}).status_code == 200


def test_characters_per_input_are_capped(fake_client_for):
    client = fake_client_for(max_input_chars=1000)
    long = "word " * 250  # 1,250 characters
    for url, body in ((V1, {"inputs": ["ok", long]}), (V1, {"inputs": [{"text": "ok", "text_pair": long}]}),
                      (V2, v2_body(["ok", long]))):
        response = client.post(url, json=body)
        assert response.status_code == 413, response.text
        assert "inputs[1]" in response.json()["error"] or "inputs[0]" in response.json()["error"]
        assert "1000 characters" in response.json()["error"]
    assert client.post(V1, json={"inputs": [long[:1000]]}).status_code == 200


def test_the_body_size_is_capped_before_it_is_read(fake_client_for):
    client = fake_client_for(max_body_bytes=4096)
    response = post_raw(client, V1, b'{"inputs": ["' + b"a" * 5000 + b'"]}')
    assert response.status_code == 413 and response.json()["error_type"] == "too_large"


def test_a_model_that_returns_nan_fails_those_requests_with_424(fake_client):
    model = fake_client.backends["plain"]
    model.fault = "nan"
    for url, body in ((V1, {"inputs": ["a"]}), (V2, v2_body(["a"]))):
        response = fake_client.post(url, json=body)
        assert response.status_code == 424, response.text
        assert "non-finite" in response.json()["error"]
    assert fake_client.post("/v1/models/svd/classify", json={"inputs": ["a"]}).status_code == 200
    model.fault = None
    assert fake_client.post(V1, json={"inputs": ["a"]}).status_code == 200


EMPTY = [
    # (url, body, the message) for empty and whitespace-only texts, each named by its place
    (V1, {"inputs": ["fine", ""]}, "inputs[1]: text is empty"),
    (V1, {"inputs": [" \t\n\u3000"]}, "inputs[0]: text is empty"),
    (V1, {"inputs": ["fine", {"text": "fine", "text_pair": " "}]}, "inputs[1]: text_pair is empty"),
    (V1, {"inputs": [{"text": "", "text_pair": "fine"}]}, "inputs[0]: text is empty"),
    ("/v1/compare", {"inputs": ["fine", "fine", "", "fine"]}, "inputs[2]: text is empty"),
    ("/v1/rerank", {"model": "plain", "query": " ", "texts": ["fine"]}, "query: text is empty"),
    ("/v1/rerank", {"model": "plain", "query": "what", "texts": ["fine", "\n"]}, "texts[1]: text is empty"),
    (V2, v2_body(["fine", "fine", "fine", ""]), "inputs[3]: text is empty"),
    (V2, {"inputs": [*v2_body(["fine"])["inputs"], {"name": "text_pair", "datatype": "BYTES", "shape": [1],
                                                    "data": [""]}]}, "inputs[0]: text_pair is empty"),
]


@pytest.mark.parametrize("url, body, message", EMPTY, ids=[f"{c[0]} {c[2]}" for c in EMPTY])
def test_an_empty_text_is_a_422_naming_its_place(fake_client, url, body, message):
    runs = len(fake_client.backends["plain"].entered)
    response = fake_client.post(url, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == message
    assert url == V2 or response.json()["error_type"] == "validation"
    assert len(fake_client.backends["plain"].entered) == runs  # refused before the model


def test_rerank_documents_are_capped_before_anything_is_tokenized(fake_client_for):
    client = fake_client_for(max_rerank_documents=3, max_inputs=2)
    body = {"model": "plain", "query": "what", "texts": ["one", "two", "three", "four"]}
    refused = client.post("/v1/rerank", json=body)
    assert refused.status_code == 413 and refused.json()["error"] == "texts holds 4 texts; the limit is 3"
    assert "slimserve_tokenization_duration_seconds_count" not in client.get("/metrics").text
    # The documents' own cap, not MAX_INPUTS: three documents rank though a request may hold two inputs.
    ranked = client.post("/v1/rerank", json={**body, "texts": body["texts"][:3]})
    assert ranked.status_code == 200 and len(ranked.json()) == 3
    assert client.post(V1, json={"inputs": ["a"] * 3}).status_code == 413
