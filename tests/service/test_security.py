"""Security: names cannot reach outside the models folder, files are loaded only from it,
checkpoints cannot run code, admin routes are guarded, logs carry no texts or secrets."""

import logging
import os
import pickle
import shutil

import pytest
from conftest import save_checkpoint

from compressor.cli import main as compressor_main

TEXT = "my card number is 4111 1111 1111 1111"


@pytest.mark.parametrize("path", [
    "/v1/models/..%2F..%2Fetc%2Fpasswd/classify",
    "/v1/models/%2E%2E/classify",
    "/v1/models/tiny-bert%00/classify",
    "/v2/models/..%2Ftiny-bert/infer",
])
def test_names_that_try_to_leave_the_models_folder_are_404(client, path):
    response = client.post(path, json={"inputs": ["a"]})
    assert response.status_code == 404 and "error" in response.json()


def test_a_variant_linked_from_outside_the_models_folder_is_refused(client_for, models_dir, tmp_path):
    models, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    models.mkdir()
    shutil.copytree(models_dir / "tiny-bert", elsewhere)
    shutil.copytree(models_dir / "tiny-bert", models / "linked-file")
    (models / "linked-file" / "model.onnx").unlink()
    (models / "linked-file" / "model.onnx").symlink_to(elsewhere / "model.onnx")
    (models / "linked-folder").symlink_to(elsewhere, target_is_directory=True)
    shutil.copytree(models_dir / "tiny-bert", models / "bad name")
    listed = {m["name"]: m for m in client_for(models).get("/v1/models").json()["models"]}
    assert "outside the models folder" in listed["linked-file"]["reason"]
    assert "outside the models folder" in listed["linked-folder"]["reason"]
    assert "invalid variant name" in listed["bad name"]["reason"]


def test_external_weights_outside_the_variant_folder_are_refused(client_for, models_dir, tmp_path):
    import onnx

    shutil.copytree(models_dir / "tiny-bert", tmp_path / "v")
    model = onnx.load(str(tmp_path / "v" / "model.onnx"))
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    (tmp_path / "stolen.bin").write_bytes(weight.raw_data)
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    for key, value in {"location": "../stolen.bin", "offset": "0", "length": str(os.path.getsize(tmp_path / "stolen.bin"))}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp_path / "v" / "model.onnx"))
    listed = {m["name"]: m for m in client_for(tmp_path).get("/v1/models").json()["models"]}
    assert listed["v"]["state"] == "failed" and "escapes model directory" in listed["v"]["reason"]


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_checkpoint_whose_weights_would_run_code_is_refused(tmp_path, capsys, monkeypatch):
    folder = save_checkpoint("bert", tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"payload": RunsCode()}, f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        compressor_main(["compress", str(folder), "--method", "none", "--name", "x", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "PWNED").exists()
    line = capsys.readouterr().err.strip()
    assert line.startswith("compressor: error: cannot load") and "\n" not in line


def test_admin_needs_the_token_and_is_off_without_one(client_for):
    off = client_for().post("/admin/reload", headers={"authorization": "Bearer anything"})
    assert off.status_code == 404 and "SLIMSERVE_ADMIN_TOKEN" in off.json()["error"]
    guarded = client_for(admin_token="s3cret-token")
    assert guarded.post("/admin/reload").status_code == 401
    wrong = guarded.post("/admin/reload", headers={"authorization": "Bearer s3cret-tokeN"})
    assert wrong.status_code == 401 and wrong.json()["error_type"] == "unauthorized"
    assert guarded.post("/admin/reload", headers={"authorization": "Bearer s3cret-token"}).status_code == 200


def test_logs_carry_neither_input_texts_nor_the_admin_token(client_for, caplog):
    caplog.set_level(logging.DEBUG)
    client = client_for(admin_token="s3cret-token", shadow_rate=1.0, reference="tiny-bert")
    client.post("/v1/models/tiny-bert/classify", json={"inputs": [TEXT]})
    client.post("/v1/models/tiny-bert/classify", json={"inputs": [TEXT], "top_k": 0})  # a 422 too
    client.post("/v2/models/tiny-bert/infer", json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                                                "data": [TEXT]}]})
    client.post("/admin/reload", headers={"authorization": "Bearer wrong"})
    client.post("/admin/reload", headers={"authorization": "Bearer s3cret-token"})
    assert caplog.records  # the service did log
    assert "4111" not in caplog.text and "s3cret" not in caplog.text
