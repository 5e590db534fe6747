"""OpenVINO's CPU plugin as a backend: the same model.onnx, read directly.

It pays where the CPU has bf16 (AVX-512 bf16, AMX): at `precision` bf16 the float
operations compute in bf16 (docs/benchmarks.md has what that buys). An int8 graph's
QuantizeLinear/DequantizeLinear pairs run as int8 kernels at either precision. Where the CPU has no bf16, bf16 falls back
to f32 with a warning.

Threads come from the same budget as ONNX Runtime's sessions (backends/__init__.py): each
compiled model gets one stream per run that may go at once (`parallel`), each of `threads`
threads, and a run holds its threads of the shared budget. An infer request is not safe
to share between threads, so each thread that runs the model gets its own.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import openvino as ov

from variant.backends import OUTPUT_NAME, ThreadBudget, budget, check_graph
from variant.manifest import Precision, Runtime

log = logging.getLogger("slimserve.backend")
DEVICE = "CPU"

_core: ov.Core | None = None
_core_lock = threading.Lock()


def core() -> ov.Core:
    """One OpenVINO Core per process: it holds the plugins and their caches."""
    global _core
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


CAPABILITY = {"f32": "FP32", "bf16": "BF16"}  # the CPU plugin's name for each precision


def supported(precision: Precision) -> bool:
    return CAPABILITY[precision] in core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")


def reason(message: str) -> str:
    """OpenVINO's error in one line: the operators it could not convert (ONNX Runtime's own,
    such as the int4 variants' MatMulNBits), else its last line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    failed = [line.split(":", 1)[1].strip() for line in lines if line.startswith("-- Conversion is failed for:")]
    if failed:
        return f"it has no conversion for {', '.join(failed)}"
    return lines[-1] if lines else "unknown error"


class OpenVinoBackend:
    provider = f"OpenVINO {DEVICE}"

    def __init__(self, path: Path, precision: Precision = "f32", threads: int = 1, parallel: int = 1,
                 limiter: ThreadBudget | None = None) -> None:
        if not supported(precision):
            log.warning("%s: this CPU has no %s; OpenVINO runs it at f32", path.parent.name, precision)
            precision = "f32"
        self.runtime, self.parallel = Runtime(backend="openvino", precision=precision, threads=threads), parallel
        try:
            self.compiled = core().compile_model(str(path), DEVICE, {
                "INFERENCE_PRECISION_HINT": precision,
                "INFERENCE_NUM_THREADS": threads * parallel,
                "NUM_STREAMS": parallel,  # streams share the threads evenly: `threads` each
                "ENABLE_CPU_PINNING": False,  # several models and the web stack share these cores
            })
        except RuntimeError as exc:
            raise ValueError(f"OpenVINO cannot run {path.name}: {reason(str(exc))}") from None
        self.input_names = tuple(port.get_any_name() for port in self.compiled.inputs)
        check_graph(path, self.input_names, [name for port in self.compiled.outputs for name in port.get_names()])
        self._output = self.compiled.output(OUTPUT_NAME)
        self._budget = budget(limiter, threads)
        self._requests = threading.local()

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        feeds = {name: arrays[name] for name in self.input_names}
        with self._budget():
            result = request.infer(feeds)
        return np.array(result[self._output], dtype=np.float32)  # a copy: the request reuses its buffers


def create(path: Path, precision: Precision, threads: int, parallel: int, limiter: ThreadBudget | None,
           provider: str) -> OpenVinoBackend:
    return OpenVinoBackend(path, precision, threads, parallel, limiter)
