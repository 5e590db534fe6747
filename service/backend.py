"""The inference backend: what the service runs a tokenized batch on.

`Backend` is the interface the batcher and the repository see; `OrtBackend`, one ONNX
Runtime session per variant, is the one the service uses. The app takes a
`BackendFactory` (variant's model.onnx → backend), so tests can serve on a fake.

Thread budget: a CPU session gets `intra_op` threads and runs only while it holds a slot
of `limiter`, a semaphore shared by every session of the process and sized
threads // intra_op. So however many variants are loaded and however many requests
arrive, at most `threads` cores compute at once. Spinning is off: an idle pool that
spins would steal the cores another variant's session is computing on. A provider that
does not compute on the CPU (providers.py) runs without a slot.

A provider this ONNX Runtime lacks (CUDA without onnxruntime-gpu, say) logs a warning
once per session and serves on the CPU, under the budget.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from service.providers import CPU, EXECUTION_PROVIDERS, ExecutionProvider

OUTPUT_NAME = "logits"
REQUIRED_INPUTS = frozenset({"input_ids", "attention_mask"})

log = logging.getLogger("slimserve.backend")


class Backend(Protocol):
    input_names: tuple[str, ...]
    provider: str  # where it computes, for logs: "CPUExecutionProvider", "CUDAExecutionProvider", ...

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Logits [batch, labels] for a tokenized batch; arrays it takes no input for are ignored."""
        ...


BackendFactory = Callable[[Path], Backend]  # a variant's model.onnx → its backend


def available(wanted: str) -> ExecutionProvider:
    """The table's row for `wanted`, or the CPU's where this ONNX Runtime cannot run it."""
    row = EXECUTION_PROVIDERS[wanted]
    if row.preferred in ort.get_available_providers():
        return row
    log.warning("execution_provider is %s but this ONNX Runtime has no %s (install its onnxruntime package "
                "and run on that device); serving on the CPU", wanted, row.preferred)
    return EXECUTION_PROVIDERS[CPU]


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
    def __init__(self, path: Path, intra_op: int = 1, limiter: threading.Semaphore | None = None,
                 provider: str = CPU) -> None:
        row = available(provider)
        self.session = ort.InferenceSession(str(path), session_options(intra_op), providers=list(row.providers),
                                            provider_options=[row.options.get(p, {}) for p in row.providers])
        self.provider = self.session.get_providers()[0]
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        outputs = [o.name for o in self.session.get_outputs()]
        if OUTPUT_NAME not in outputs:
            raise ValueError(f"{path.name} has no '{OUTPUT_NAME}' output (outputs: {', '.join(outputs)})")
        missing = REQUIRED_INPUTS - set(self.input_names)
        if missing:
            raise ValueError(f"{path.name} lacks the inputs {', '.join(sorted(missing))}")
        budgeted = limiter is not None and row.thread_budget
        self._limiter = limiter if budgeted else contextlib.nullcontext()

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: arrays[name] for name in self.input_names}
        with self._limiter:
            (logits,) = self.session.run([OUTPUT_NAME], feeds)
        return logits
