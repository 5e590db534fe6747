"""compressor/export.py's preferred_runtime: what a variant is recorded to run on."""

import pytest

pytest.importorskip("torch", reason="the export needs torch")

from compressor import export
from variant.manifest import Runtime


def test_a_quantizer_without_a_backend_runs_on_onnxruntime():
    assert export.preferred_runtime(None) == Runtime()
    assert export.preferred_runtime("int8-static") == Runtime()


def test_nncf_int8_is_recorded_for_openvino_at_its_fastest_precision_here(monkeypatch):
    here = [Runtime(), Runtime(backend="openvino"), Runtime(backend="openvino", precision="bf16")]
    monkeypatch.setattr(export, "runtimes", lambda: here)
    assert export.preferred_runtime("int8-nncf").label() == "openvino/bf16"
    monkeypatch.setattr(export, "runtimes", lambda: here[:2])
    assert export.preferred_runtime("int8-nncf").label() == "openvino/f32"


def test_without_openvino_the_manifest_says_why_it_runs_on_onnxruntime(monkeypatch):
    monkeypatch.setattr(export, "runtimes", lambda: [Runtime()])
    runtime = export.preferred_runtime("int8-nncf")
    assert runtime.label() == "onnxruntime/f32"
    assert "openvino is not installed" in runtime.note and "slimserve[openvino]" in runtime.note


def recorded(monkeypatch, tmp_path, variation: dict[str, float], fails: tuple[str, ...] = ()):
    """record_batch_variation with opening and measuring steered by runtime label."""
    from variant.manifest import Manifest

    def open_on(folder, runtime):
        if runtime.label() in fails:
            raise ValueError("OpenVINO cannot run model.onnx: it has no conversion for If\nmore")
        return runtime.label()

    monkeypatch.setattr(export, "open_on", open_on)
    monkeypatch.setattr(export.measure, "batch_variation", lambda label, inputs: variation[label])
    manifest = Manifest(name="v", base_model="b", labels=["a", "b"], max_length=8, method="int8-nncf",
                        parameters=1, parameters_original=1, onnx_bytes=1, runtime=Runtime(backend="openvino"))
    export.record_batch_variation(tmp_path, manifest, ["a text"])
    return manifest


def test_a_runtime_that_keeps_answers_still_stays_recorded(monkeypatch, tmp_path):
    manifest = recorded(monkeypatch, tmp_path, {"openvino/f32": 2e-5, "onnxruntime/f32": 0.0})
    assert manifest.runtime.label() == "openvino/f32" and manifest.batch_invariant
    assert manifest.batch_variation == 2e-5


def test_a_runtime_that_moves_answers_with_the_batch_gives_way_to_onnxruntime(monkeypatch, tmp_path):
    manifest = recorded(monkeypatch, tmp_path, {"openvino/f32": 1.4e-3, "onnxruntime/f32": 1e-7})
    assert manifest.runtime.label() == "onnxruntime/f32" and manifest.batch_invariant
    assert "openvino/f32 moved answers by 0.0014" in manifest.runtime.note


def test_where_neither_holds_the_faster_runtime_stays_and_says_so(monkeypatch, tmp_path):
    manifest = recorded(monkeypatch, tmp_path, {"openvino/f32": 1e-3, "onnxruntime/f32": 5e-3})
    assert manifest.runtime.label() == "openvino/f32" and not manifest.batch_invariant
    assert manifest.batch_variation == 1e-3


def test_a_runtime_that_cannot_open_the_graph_gives_way_to_onnxruntime(monkeypatch, tmp_path):
    manifest = recorded(monkeypatch, tmp_path, {"onnxruntime/f32": 0.0}, fails=("openvino/f32",))
    assert manifest.runtime.label() == "onnxruntime/f32" and manifest.batch_invariant
    assert "openvino/f32 cannot run it: OpenVINO cannot run model.onnx" in manifest.runtime.note
