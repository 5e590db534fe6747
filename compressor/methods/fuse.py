"""`--quantize fused`: ONNX Runtime's transformer fusions written into the exported graph.

ONNX Runtime's transformer optimizer rewrites the traced BERT pattern into its own fused
operators: Attention (the Q/K/V projections, scores, mask and softmax in one kernel),
SkipLayerNormalization (residual add and LayerNorm), BiasGelu and EmbedLayerNormalization.
Fewer, larger operators cost less per run where a run is mostly per-operator work (one
short text); a larger batch can lose to the plain graph, so `compressor search` measures
both. The graph stays float and computes what the plain export computes, so it is held to
the fp32 parity limit. Those operators are ONNX Runtime's own: OpenVINO cannot run them.
"""

from __future__ import annotations

from pathlib import Path


def fuse_graph(source: Path, target: Path, spec: str, feeds: object = None) -> dict:
    """The arguments are every quantizer's (compressor.recipe.Quantizer); `feeds` is unused."""
    from onnxruntime.transformers.optimizer import optimize_model

    # Sizes 0: read the head count and hidden size off the graph, whatever the method left.
    model = optimize_model(str(source), model_type="bert", num_heads=0, hidden_size=0)
    model.save_model_to_file(str(target))
    fused = {op: n for op, n in model.get_fused_operator_statistics().items() if n}
    return {"quantize": spec, "fused_operators": fused}
