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
