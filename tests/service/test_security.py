"""Security: names cannot reach outside the models folder, files are loaded only from it,
admin routes are guarded, logs carry no texts or secrets. On fake variants (tests/fakes.py)
but for the external weights ONNX Runtime would read, on a toy graph. (That checkpoints
cannot run code is the compressor's: tests/compressor/test_checkpoint_safety.py.)"""

import logging
import os

import pytest
from conftest import fake_variants, toy_graph

TEXT = "my card number is 4111 1111 1111 1111"


@pytest.mark.parametrize("path", [
    "/v1/models/..%2F..%2Fetc%2Fpasswd/classify",
    "/v1/models/%2E%2E/classify",
    "/v1/models/plain%00/classify",
    "/v2/models/..%2Fplain/infer",
])
def test_names_that_try_to_leave_the_models_folder_are_404(fake_client, path):
    response = fake_client.post(path, json={"inputs": ["a"]})
    assert response.status_code == 404 and "error" in response.json()


def test_a_variant_linked_from_outside_the_models_folder_is_refused(fake_client_for, tmp_path):
    models = fake_variants(tmp_path / "models", **{"linked-file": {}, "bad name": {}})
    elsewhere = fake_variants(tmp_path / "outside", elsewhere={}) / "elsewhere"
    (models / "linked-file" / "model.onnx").unlink()
    (models / "linked-file" / "model.onnx").symlink_to(elsewhere / "model.onnx")
    (models / "linked-folder").symlink_to(elsewhere, target_is_directory=True)
    listed = {m["name"]: m for m in fake_client_for(models).get("/v1/models").json()["models"]}
    assert "outside the models folder" in listed["linked-file"]["reason"]
    assert "outside the models folder" in listed["linked-folder"]["reason"]
    assert "invalid variant name" in listed["bad name"]["reason"]


def test_external_weights_outside_the_variant_folder_are_refused(make_client, tmp_path):
    fake_variants(tmp_path, v={})
    toy_graph(tmp_path / "v" / "model.onnx")
    import onnx

    model = onnx.load(str(tmp_path / "v" / "model.onnx"))
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    (tmp_path / "stolen.bin").write_bytes(weight.raw_data)
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    for key, value in {"location": "../stolen.bin", "offset": "0", "length": str(os.path.getsize(tmp_path / "stolen.bin"))}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp_path / "v" / "model.onnx"))
    listed = {m["name"]: m for m in make_client(tmp_path).get("/v1/models").json()["models"]}
    assert listed["v"]["state"] == "failed" and "escapes model directory" in listed["v"]["reason"]


def test_admin_needs_the_token_and_is_off_without_one(fake_client_for):
    off = fake_client_for().post("/admin/reload", headers={"authorization": "Bearer anything"})
    assert off.status_code == 404 and "SLIMSERVE_ADMIN_TOKEN" in off.json()["error"]
    guarded = fake_client_for(admin_token="s3cret-token")
    assert guarded.post("/admin/reload").status_code == 401
    wrong = guarded.post("/admin/reload", headers={"authorization": "Bearer s3cret-tokeN"})
    assert wrong.status_code == 401 and wrong.json()["error_type"] == "unauthorized"
    assert guarded.post("/admin/reload", headers={"authorization": "Bearer s3cret-token"}).status_code == 200


def test_logs_carry_neither_input_texts_nor_the_admin_token(fake_client_for, caplog):
    caplog.set_level(logging.DEBUG)
    client = fake_client_for(admin_token="s3cret-token", shadow_rate=1.0, reference="plain")
    client.post("/v1/models/svd/classify", json={"inputs": [TEXT]})  # mirrored to plain
    client.post("/v1/models/plain/classify", json={"inputs": [TEXT], "top_k": 0})  # a 422 too
    client.post("/v2/models/plain/infer", json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                                                "data": [TEXT]}]})
    client.post("/admin/reload", headers={"authorization": "Bearer wrong"})
    client.post("/admin/reload", headers={"authorization": "Bearer s3cret-token"})
    assert caplog.records  # the service did log
    assert "4111" not in caplog.text and "s3cret" not in caplog.text
