"""The OpenVINO backend: the same graphs, the same answers, the same thread budget; and
which runtime a variant gets from its manifest and the settings."""

import threading

import numpy as np
import pytest
from conftest import metric_value

from service.settings import Settings
from variant.backends import ThreadBudget, open_backend
from variant.backends.ort import OrtBackend
from variant.manifest import Runtime, read_manifest, write_manifest

openvino_backend = pytest.importorskip("variant.backends.openvino", reason="the [openvino] extra is not installed")


def token_batch(rows: int = 3, length: int = 9) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(5, 90, size=(rows, length), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[0, 6:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


@pytest.mark.parametrize("variant", ["tiny-bert", "tiny-bert-svd", "tiny-roberta-int8"])
def test_openvino_f32_matches_onnx_runtime(models_dir, variant):
    path = models_dir / variant / "model.onnx"
    batch = token_batch()
    expected = OrtBackend(path).run(batch)
    backend = open_backend(path, Runtime(backend="openvino"))
    assert backend.runtime == Runtime(backend="openvino", precision="f32", threads=1)
    assert backend.run(batch).shape == expected.shape
    np.testing.assert_allclose(backend.run(batch), expected, atol=1e-4)


def test_bf16_runs_where_the_cpu_has_it_and_stays_close(models_dir):
    path = models_dir / "tiny-bert" / "model.onnx"
    batch = token_batch()
    backend = open_backend(path, Runtime(backend="openvino", precision="bf16"))
    expected_precision = "bf16" if openvino_backend.supported("bf16") else "f32"
    assert backend.runtime.precision == expected_precision
    np.testing.assert_allclose(backend.run(batch), OrtBackend(path).run(batch), atol=5e-2)


def test_bf16_falls_back_to_f32_on_a_cpu_without_it(models_dir, monkeypatch, caplog):
    monkeypatch.setattr(openvino_backend, "supported", lambda precision: precision == "f32")
    backend = open_backend(models_dir / "tiny-bert" / "model.onnx", Runtime(backend="openvino", precision="bf16"))
    assert backend.runtime.precision == "f32"
    assert "has no bf16" in caplog.text


class CountingBudget(ThreadBudget):
    def __init__(self) -> None:
        super().__init__(4)
        self.held: list[int] = []

    def hold(self, threads: int):
        self.held.append(threads)
        return super().hold(threads)


def test_openvino_runs_hold_their_threads_of_the_budget(models_dir):
    limiter = CountingBudget()
    backend = open_backend(models_dir / "tiny-bert" / "model.onnx", Runtime(backend="openvino", threads=2),
                           limiter=limiter)
    backend.run(token_batch())
    backend.run(token_batch())
    assert limiter.held == [2, 2]


def run_at_once(backend, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Each batch run by `backend` in its own thread, all started together."""
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, backend.run(batches[i])))
               for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [results[i] for i in range(len(batches))]


def test_runs_side_by_side_give_the_answers_of_runs_one_at_a_time(models_dir):
    path = models_dir / "tiny-bert" / "model.onnx"
    alone = open_backend(path, Runtime(backend="openvino", threads=1))
    together = open_backend(path, Runtime(backend="openvino", threads=1), parallel=2)
    assert together.parallel == 2
    batches = [token_batch(rows, 5 + rows) for rows in (1, 2, 3, 4)]
    for result, batch in zip(run_at_once(together, batches), batches, strict=True):
        np.testing.assert_array_equal(result, alone.run(batch))


def test_each_thread_gets_its_own_infer_request(models_dir):
    backend = open_backend(models_dir / "tiny-bert" / "model.onnx", Runtime(backend="openvino"))
    batches = [token_batch(rows, 5 + rows) for rows in (1, 2, 3, 4)]
    expected = [backend.run(b) for b in batches]
    for result, want in zip(run_at_once(backend, batches), expected, strict=True):
        np.testing.assert_array_equal(result, want)


def test_without_openvino_a_variant_serves_on_onnx_runtime(models_dir, monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "variant.backends.openvino", None)  # import fails as if not installed
    backend = open_backend(models_dir / "tiny-bert" / "model.onnx", Runtime(backend="openvino", precision="bf16"))
    assert backend.runtime.label() == Runtime().label() and "not installed" in caplog.text


@pytest.mark.parametrize("recorded, settings, expected", [
    (Runtime(), {}, Runtime()),
    (Runtime(backend="openvino", precision="bf16"), {}, Runtime(backend="openvino", precision="bf16")),
    (Runtime(backend="openvino", precision="bf16"), {"backend": "onnxruntime"}, Runtime()),
    (Runtime(), {"backend": "openvino"}, Runtime(backend="openvino")),
    (Runtime(), {"backend": "openvino", "precision": "bf16"}, Runtime(backend="openvino", precision="bf16")),
    (Runtime(backend="openvino"), {"precision": "bf16"}, Runtime(backend="openvino", precision="bf16")),
    (Runtime(), {"precision": "bf16"}, Runtime()),  # ONNX Runtime has no bf16: the variant stays as it is
])
def test_settings_override_the_recorded_runtime(recorded, settings, expected):
    assert Settings(threads=2, **settings).runtime_for(recorded) == expected.model_copy(update={"threads": 2})


def test_a_precision_the_backend_lacks_is_refused():
    with pytest.raises(ValueError, match="onnxruntime runs at f32, not bf16"):
        Runtime(backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="onnxruntime runs at f32, not bf16"):
        Settings(backend="onnxruntime", precision="bf16")


def test_the_service_runs_each_variant_on_its_recorded_runtime(models_copy, make_client):
    folder = models_copy / "tiny-bert-svd"
    manifest = read_manifest(folder)
    manifest.runtime = Runtime(backend="openvino")
    write_manifest(folder, manifest)
    client = make_client(models_copy, threads=2)
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["tiny-bert-svd"]["runtime"] == {"backend": "openvino", "precision": "f32", "device": "OpenVINO CPU",
                                                  "threads": 2, "parallel": 1}
    assert models["tiny-bert-svd"]["manifest"]["runtime"] == {"backend": "openvino", "precision": "f32"}
    assert models["tiny-bert"]["runtime"]["backend"] == "onnxruntime"
    text = client.get("/metrics").text
    assert metric_value(text, "slimserve_model_info", model="tiny-bert-svd", backend="openvino", precision="f32") == 1
    answer = client.post("/v1/models/tiny-bert-svd/classify", json={"inputs": ["a fine day"]})
    assert answer.status_code == 200

    overridden = make_client(models_copy, backend="onnxruntime")
    models = {m["name"]: m for m in overridden.get("/v1/models").json()["models"]}
    assert models["tiny-bert-svd"]["runtime"]["backend"] == "onnxruntime"


def test_a_graph_openvino_cannot_convert_is_refused_in_one_line(checkpoints, tmp_path):
    from compressor.pipeline import Recipe, compress

    compress(str(checkpoints["bert"]), Recipe("int4", quantize="int4-emb4"), tmp_path)
    with pytest.raises(ValueError) as refused:
        open_backend(tmp_path / "int4" / "model.onnx", Runtime(backend="openvino"))
    message = str(refused.value)
    assert message.startswith("OpenVINO cannot run model.onnx: ") and "\n" not in message


def test_the_operators_openvino_could_not_convert_make_the_reason():
    message = ("Exception from src/inference/src/cpp/core.cpp:132:\nModel wasn't fully converted.\n"
               "-- com.microsoft.MatMulNBits with a message:\nwhatever\n\nSummary:\n"
               "-- Conversion is failed for: com.microsoft.MatMulNBits\n\n")
    assert openvino_backend.reason(message) == "it has no conversion for com.microsoft.MatMulNBits"
    assert openvino_backend.reason("first\nlast line\n") == "last line"
