"""The table of backends: one row per runtime a variant can run on.

A row names the backend (the manifest's `runtime.backend`), the precisions it can compute
a graph's float operations in (integer operations a graph carries, int8 QDQ or 4-bit
MatMulNBits, run as such on every backend), the module under variant/backends that opens
it, the pip extra that installs it, and the platform name the Open Inference Protocol's
model metadata reports. The manifest's allowed precisions, opening a variant, `compressor
search`'s runtimes, v2 metadata and /v1/models all read this table. Adding a backend is a
module under backends/ and a row here. Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendRow:
    precisions: tuple[str, ...]  # the first is the default
    module: str  # defines create(path, precision, threads, parallel, limiter, provider) and supported(precision)
    extra: str | None  # `pip install 'slimserve[EXTRA]'` installs it; None: always installed
    platform: str  # v2 model metadata's `platform`


BACKENDS: dict[str, BackendRow] = {
    "onnxruntime": BackendRow(("f32",), "variant.backends.ort", None, "onnxruntime_onnx"),
    # bf16 where the CPU computes it (AVX-512 bf16, AMX)
    "openvino": BackendRow(("f32", "bf16"), "variant.backends.openvino", "openvino", "openvino"),
}
DEFAULT_BACKEND = "onnxruntime"
