"""compressor/methods/fuse.py: ONNX Runtime's fused operators in a BERT graph, answers unchanged."""

import pytest

pytest.importorskip("torch", reason="exporting needs torch")

from conftest import CORPUS

from compressor.export import PARITY_LIMIT
from compressor.pipeline import compress
from compressor.recipe import Recipe


def test_a_bert_graph_gets_fused_attention_and_keeps_fp32_parity(checkpoints, tmp_path):
    manifest = compress(str(checkpoints["bert"]), Recipe("fused", quantize="fused"), tmp_path, list(CORPUS))
    fused = manifest.settings["fused_operators"]
    assert fused.get("Attention", 0) >= 1 and fused.get("SkipLayerNormalization", 0) >= 1
    assert manifest.parity <= PARITY_LIMIT and manifest.batch_invariant
    assert manifest.runtime.backend == "onnxruntime"
