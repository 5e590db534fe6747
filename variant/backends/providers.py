"""Execution providers: the one table of where ONNX Runtime may run a variant.

Each row names a setting value (`SLIMSERVE_EXECUTION_PROVIDER`) and says which ONNX
Runtime providers a session asks for, most preferred first, with their options, and
whether its runs compute on the CPU. CPU runs hold a slot of the process's thread budget
(see backends/__init__.py); a GPU run does not, or every variant would queue behind the CPU slots
while the GPU idles. Adding a provider is adding a row. Imports nothing heavy, so the
settings can list the names.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExecutionProvider:
    providers: tuple[str, ...]  # ONNX Runtime's names, most preferred first
    options: dict[str, dict[str, str]] = field(default_factory=dict)  # by ONNX Runtime name
    thread_budget: bool = True  # runs compute on the CPU, so they take a slot of the budget

    @property
    def preferred(self) -> str:
        return self.providers[0]


CPU = "cpu"
# Several variants share one GPU: each session's arena grows by what it asks for, not to
# the next power of two.
CUDA_OPTIONS = {"arena_extend_strategy": "kSameAsRequested"}
TRT_CACHE = os.path.join(tempfile.gettempdir(), "slimserve-trt")  # engines, by graph and shape

EXECUTION_PROVIDERS: dict[str, ExecutionProvider] = {
    CPU: ExecutionProvider(("CPUExecutionProvider",)),
    # CPU stays in the list for any node CUDA cannot run.
    "cuda": ExecutionProvider(("CUDAExecutionProvider", "CPUExecutionProvider"),
                              {"CUDAExecutionProvider": CUDA_OPTIONS}, thread_budget=False),
    # TensorRT builds an engine per input shape it meets (the warm-up shapes, then any
    # new one), in fp16; the cache keeps them across restarts. What TensorRT cannot run
    # goes to CUDA, then the CPU.
    "tensorrt": ExecutionProvider(("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
                                  {"TensorrtExecutionProvider": {
                                      "trt_fp16_enable": "True",
                                      "trt_engine_cache_enable": "True",
                                      "trt_engine_cache_path": TRT_CACHE,
                                  }, "CUDAExecutionProvider": CUDA_OPTIONS}, thread_budget=False),
}
