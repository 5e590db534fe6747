"""`--quantize int8-nncf`: static int8 calibrated by NNCF, for OpenVINO.

NNCF's post-training quantization with its transformer preset: SmoothQuant first moves
each MatMul's activation outliers into its weights (per input channel, alpha 0.95), then
activation ranges are fixed on the calibration batches, weights get one int8 scale per
output channel, and a fast bias correction absorbs the mean shift rounding causes. Only
MatMuls with a stored weight are quantized; the attention-score MatMuls between two
activations stay float, as in `int8-static`.

Measured on the SST-2 teacher (docs/benchmarks.md), it keeps fp32 accuracy on OpenVINO,
where its QuantizeLinear/DequantizeLinear pairs become int8 kernels; ONNX Runtime runs
the same graph correctly but slowly (it does not fuse the SmoothQuant scales), which is
why `int8-static`, calibrated by ONNX Runtime's own quantizer, stays the int8 for ONNX
Runtime, and why `compressor search` tries each on each backend.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

from compressor.methods.quantize import (
    Feeds,
    generator_nodes,
    keep_generators_fp32,
    store_factors_int8,
    weight_matmuls,
)

RECIPE = "static QDQ by NNCF: transformer preset, SmoothQuant, per-channel s8 weights, fast bias correction"


def quantize_nncf_int8(source: Path, target: Path, spec: str, feeds: Feeds | None = None) -> dict:
    assert feeds, "int8-nncf needs calibration batches: its row says needs_calibration"
    import nncf

    logging.getLogger("nncf").setLevel(logging.WARNING)  # one INFO line per node otherwise
    keep_generators_fp32(source)
    model = onnx.load(str(source))
    quantized = set(weight_matmuls(source))
    float_matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in quantized]
    ignored = sorted(set(float_matmuls) | set(generator_nodes(model.graph)))
    result = nncf.quantize(
        model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds),
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
    )
    onnx.save(result, str(target))
    return {"quantize": spec, "quantize_recipe": RECIPE, **store_factors_int8(target)}
