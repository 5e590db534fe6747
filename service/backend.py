"""The inference backend: one ONNX Runtime session per variant.

Thread budget: a session gets `intra_op` threads and runs only while it holds a slot of
`limiter`, a semaphore shared by every session of the process and sized
threads // intra_op. So however many variants are loaded and however many requests
arrive, at most `threads` cores compute at once. Spinning is off: an idle pool that
spins would steal the cores another variant's session is computing on.

Execution provider: "cpu", or "cuda" where onnxruntime-gpu finds a GPU (CPU stays as the
fallback for any node CUDA cannot run). Asking for CUDA without it logs a warning once per
session and serves on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

OUTPUT_NAME = "logits"
CUDA = "CUDAExecutionProvider"

log = logging.getLogger("slimserve.backend")


def providers(wanted: str) -> list[str]:
    if wanted == "cuda":
        if CUDA in ort.get_available_providers():
            return [CUDA, "CPUExecutionProvider"]
        log.warning("execution_provider is cuda but this ONNX Runtime has no %s (install onnxruntime-gpu "
                    "and run on a GPU); serving on the CPU", CUDA)
    return ["CPUExecutionProvider"]


def session_options(intra_op: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OrtBackend:
    def __init__(self, path: Path, intra_op: int, limiter: threading.Semaphore | None = None,
                 provider: str = "cpu") -> None:
        self.session = ort.InferenceSession(str(path), session_options(intra_op), providers=providers(provider))
        self.provider = self.session.get_providers()[0]
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        outputs = [o.name for o in self.session.get_outputs()]
        if OUTPUT_NAME not in outputs:
            raise ValueError(f"{path.name} has no '{OUTPUT_NAME}' output (outputs: {', '.join(outputs)})")
        missing = {"input_ids", "attention_mask"} - set(self.input_names)
        if missing:
            raise ValueError(f"{path.name} lacks the inputs {', '.join(sorted(missing))}")
        self._limiter = limiter if limiter is not None else contextlib.nullcontext()

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Logits [batch, labels] for a tokenized batch; extra arrays the graph lacks are ignored."""
        feeds = {name: arrays[name] for name in self.input_names}
        with self._limiter:
            (logits,) = self.session.run([OUTPUT_NAME], feeds)
        return logits
