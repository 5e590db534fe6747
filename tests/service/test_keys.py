"""Client API keys (service/keys.py): with keys set, the routes that run a model need
`Authorization: Bearer <key>`; a missing or wrong key is a 401 in the API's error shape,
counted by path, refused before the body is read; keys never reach a log or an answer."""

import hashlib
import hmac
import logging

import pytest
from conftest import metric_value
from pydantic import SecretStr, ValidationError

from service import keys
from service.settings import Settings

KEY, OTHER = "k3y-for-the-tests-0123456789", "another-client-key-9876543210"
TEXT = "a charming and often affecting journey"
V2_BODY = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}]}
# Every route that runs a model or labels its answers: (path, body, whether its errors have the /v2 shape).
MODEL_ROUTES = [
    ("/v1/feedback", {"feedback": [{"id": "an-earlier-answer", "label": "positive"}]}, False),
    ("/v1/models/plain/classify", {"inputs": [TEXT]}, False),
    ("/v1/rerank", {"model": "plain", "query": "what", "texts": [TEXT]}, False),
    ("/v1/compare", {"inputs": [TEXT]}, False),
    ("/v2/models/plain/infer", V2_BODY, True),
    ("/v2/models/plain/versions/1/infer", V2_BODY, True),
]
OPEN_ROUTES = ["/", "/v1/models", "/v1/models/plain", "/v2/models/plain", "/v2", "/health/live", "/health/ready",
               "/v2/health/ready", "/metrics", "/openapi.json"]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def keyed(fake_client_for):
    return fake_client_for(api_keys=f"{KEY}, {OTHER}")


@pytest.mark.parametrize("path, body, v2", MODEL_ROUTES, ids=[r[0] for r in MODEL_ROUTES])
def test_a_model_route_needs_an_accepted_key(keyed, path, body, v2):
    for headers in ({}, bearer("wrong"), {"authorization": KEY}, bearer(KEY[:-1])):
        refused = keyed.post(path, json=body, headers=headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.headers["www-authenticate"] == "Bearer"
        assert set(refused.json()) == ({"error"} if v2 else {"error", "error_type"})
        assert v2 or refused.json()["error_type"] == "unauthorized"
        assert KEY not in refused.text
    for key in (KEY, OTHER):
        assert keyed.post(path, json=body, headers=bearer(key)).status_code == 200
    lower = keyed.post(path, json=body, headers={"authorization": f"bearer {KEY}"})  # the scheme is case-blind
    assert lower.status_code == 200


def test_other_routes_stay_open_and_refusals_are_counted_by_path(keyed):
    runs = len(keyed.backends["plain"].entered)  # the probe run at load
    assert all(keyed.get(path).status_code == 200 for path in OPEN_ROUTES)
    keyed.post("/v1/models/plain/classify", json={"inputs": [TEXT]})
    keyed.post("/v1/models/no-such-model/classify", json={"inputs": [TEXT]}, headers=bearer("wrong"))
    keyed.post("/v2/models/plain/infer", json=V2_BODY)
    text = keyed.get("/metrics").text
    assert metric_value(text, "slimserve_unauthorized_total", path="/v1/models/{name}/classify") == 2
    assert metric_value(text, "slimserve_unauthorized_total", path="/v2/models/{name}/infer") == 1
    # A refused request never reached its model: nothing ran, nothing was counted under it.
    assert len(keyed.backends["plain"].entered) == runs
    assert 'slimserve_requests_total{model="plain"' not in text


def test_a_request_without_a_key_is_refused_before_its_body_is_read(fake_client_for):
    client = fake_client_for(api_keys=KEY, max_body_bytes=1024)
    big = {"inputs": ["word " * 300]}
    assert client.post("/v1/models/plain/classify", json=big).status_code == 401
    assert client.post("/v1/models/plain/classify", json=big, headers=bearer(KEY)).status_code == 413


def test_keys_from_a_file_of_digests(fake_client_for, tmp_path):
    listing = tmp_path / "keys.txt"
    listing.write_text(f"# one digest a line\n\n{digest(KEY).upper()}  # alice\n   {digest(OTHER)}\n")
    client = fake_client_for(api_keys_file=listing)
    for key in (KEY, OTHER):
        assert client.post("/v1/models/plain/classify", json={"inputs": [TEXT]}, headers=bearer(key)).status_code == 200
    # The file holds digests: a digest presented as a key is not a key.
    assert client.post("/v1/models/plain/classify", json={"inputs": [TEXT]},
                       headers=bearer(digest(KEY))).status_code == 401


def test_the_keys_setting_and_the_file_add_up(fake_client_for, tmp_path):
    (tmp_path / "keys.txt").write_text(digest(OTHER) + "\n")
    client = fake_client_for(api_keys=KEY, api_keys_file=tmp_path / "keys.txt")
    for key in (KEY, OTHER):
        assert client.post("/v1/models/plain/classify", json={"inputs": [TEXT]}, headers=bearer(key)).status_code == 200


@pytest.mark.parametrize("content, message", [
    ("# nothing but a comment\n", "holds no digest"),
    (f"{digest(KEY)}\n{KEY}\n", "line 2: not a SHA-256 hex digest"),
    (digest(KEY)[:-1] + "\n", "line 1: not a SHA-256 hex digest"),
])
def test_a_bad_keys_file_is_refused_at_start_without_echoing_it(tmp_path, content, message):
    (tmp_path / "keys.txt").write_text(content)
    with pytest.raises(ValidationError) as refused:
        Settings(api_keys_file=tmp_path / "keys.txt")
    assert message in str(refused.value) and KEY not in str(refused.value)


def test_a_missing_keys_file_and_an_empty_keys_setting_are_refused_at_start(tmp_path):
    with pytest.raises(ValidationError, match="cannot read missing.txt"):
        Settings(api_keys_file=tmp_path / "missing.txt")
    with pytest.raises(ValidationError, match="holds no key"):
        Settings(api_keys=" , ")
    assert KEY not in repr(Settings(api_keys=KEY))


def test_scope_all_guards_every_route_but_the_probes(fake_client_for):
    client = fake_client_for(api_keys=KEY, api_keys_scope="all")
    for path in ("/", "/v1/models", "/v2/models/plain", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=bearer(KEY)).status_code == 200, path
    for path in ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"):
        assert client.get(path).status_code == 200, path
    assert client.get("/no/such/route").status_code == 404


def test_the_openapi_schema_declares_the_key_on_the_guarded_routes_only(fake_client, keyed):
    assert "securitySchemes" not in fake_client.get("/openapi.json").json().get("components", {})
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"][keys.SCHEME] == {
        "type": "http", "scheme": "bearer", "description": "A client API key (SLIMSERVE_API_KEYS)."}
    guarded = {(path, method) for path, operations in schema["paths"].items() for method, operation
               in operations.items() if operation.get("security") == [{keys.SCHEME: []}] and "401" in operation["responses"]}
    assert guarded == {(path.replace("plain", "{name}").replace("/1/", "/{version}/"), "post")
                       for path, _, _ in MODEL_ROUTES}
    v2_refusal = schema["paths"]["/v2/models/{name}/infer"]["post"]["responses"]["401"]
    assert v2_refusal["content"]["application/json"]["schema"]["required"] == ["error"]


def test_the_admin_token_and_client_keys_are_apart(fake_client_for):
    client = fake_client_for(api_keys=KEY, admin_token="s3cret-admin")
    assert client.post("/admin/reload", headers=bearer(KEY)).status_code == 401
    assert client.post("/admin/reload", headers=bearer("s3cret-admin")).status_code == 200
    classify = client.post("/v1/models/plain/classify", json={"inputs": [TEXT]}, headers=bearer("s3cret-admin"))
    assert classify.status_code == 401


def test_every_stored_digest_is_compared_whichever_matches(monkeypatch):
    stored = [digest(key) for key in ("first-key", KEY, "last-key")]
    compared, compare = [], hmac.compare_digest

    def counting(a, b):
        compared.append(b)
        return compare(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", counting)
    for presented, accepted in ((KEY, True), ("first-key", True), ("nope", False), (None, False)):
        compared.clear()
        assert keys.matches(stored, f"Bearer {presented}" if presented else None) is accepted
        assert compared == stored


def test_keys_are_never_logged(fake_client_for, caplog):
    caplog.set_level(logging.DEBUG)
    client = fake_client_for(api_keys=KEY)
    client.post("/v1/models/plain/classify", json={"inputs": [TEXT]}, headers=bearer(KEY))
    client.post("/v1/models/plain/classify", json={"inputs": [TEXT]}, headers=bearer(KEY + "x"))
    assert caplog.records and KEY not in caplog.text
    assert KEY not in repr(keys.accepted(SecretStr(KEY), None))
