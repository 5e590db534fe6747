"""The inference backend: what the service runs a tokenized batch on.

`Backend` is the interface the batcher and the repository see. There is one
implementation per runtime: `OrtBackend` (ONNX Runtime, here) and `OpenVinoBackend`
(openvino_backend.py, the optional `openvino` package); `open_backend` picks one for a
variant's recorded `Runtime`. The app takes a `BackendFactory` (a variant's model.onnx
and runtime → backend), so tests can serve on a fake.

Thread budget: a CPU session gets `intra_op` threads and runs only while it holds a slot
of `limiter`, a semaphore shared by every session of the process and sized
threads // intra_op. So however many variants are loaded and however many requests
arrive, at most `threads` cores compute at once. Spinning is off: an idle pool that
spins would steal the cores another variant's session is computing on. A provider that
does not compute on the CPU (providers.py) runs without a slot.

A provider this ONNX Runtime lacks (CUDA without onnxruntime-gpu, say) logs a warning
once per session and serves on the CPU, under the budget. Likewise a variant recorded for
OpenVINO serves on ONNX Runtime where the package is not installed, and bf16 falls back
to f32 on a CPU without it: a backend's `runtime` says what actually runs.
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

from service.manifest import PRECISIONS, Runtime
from service.providers import CPU, EXECUTION_PROVIDERS, ExecutionProvider

OUTPUT_NAME = "logits"
REQUIRED_INPUTS = frozenset({"input_ids", "attention_mask"})

log = logging.getLogger("slimserve.backend")


class Backend(Protocol):
    input_names: tuple[str, ...]
    provider: str  # where it computes, for logs: "CPUExecutionProvider", "CUDAExecutionProvider", ...
    runtime: Runtime  # the backend and precision it runs at, after any fallback

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Logits [batch, labels] for a tokenized batch; arrays it takes no input for are ignored."""
        ...


BackendFactory = Callable[[Path, Runtime], Backend]  # a variant's model.onnx and recorded runtime → its backend


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


def check_graph(path: Path, inputs: tuple[str, ...], outputs: list[str]) -> None:
    """Every backend serves the same graphs: token inputs in, `logits` out."""
    if OUTPUT_NAME not in outputs:
        raise ValueError(f"{path.name} has no '{OUTPUT_NAME}' output (outputs: {', '.join(outputs)})")
    missing = REQUIRED_INPUTS - set(inputs)
    if missing:
        raise ValueError(f"{path.name} lacks the inputs {', '.join(sorted(missing))}")


def budget(limiter: threading.Semaphore | None, computes_on_cpu: bool = True) -> contextlib.AbstractContextManager:
    """What a run holds while it computes: a slot of the process's CPU budget, or nothing."""
    return limiter if limiter is not None and computes_on_cpu else contextlib.nullcontext()


def open_backend(path: Path, runtime: Runtime, intra_op: int = 1, limiter: threading.Semaphore | None = None,
                 provider: str = CPU) -> Backend:
    """The backend `runtime` names for the graph at `path`; ONNX Runtime where OpenVINO is
    not installed. `provider` is ONNX Runtime's execution provider (providers.py)."""
    if runtime.backend == "openvino":
        try:
            from service.openvino_backend import OpenVinoBackend
        except ImportError:
            log.warning("%s is recorded to run on OpenVINO, which is not installed (pip install "
                        "'slimserve[openvino]'); serving it on ONNX Runtime", path.parent.name)
        else:
            return OpenVinoBackend(path, runtime.precision, intra_op, limiter)
    return OrtBackend(path, intra_op, limiter, provider)


def runtimes() -> list[Runtime]:
    """Every backend and precision this process can run a variant at."""
    found = [Runtime()]
    try:
        from service.openvino_backend import supported
    except ImportError:
        return found
    return found + [Runtime(backend="openvino", precision=p) for p in PRECISIONS["openvino"] if supported(p)]


class OrtBackend:
    runtime = Runtime(backend="onnxruntime", precision="f32")

    def __init__(self, path: Path, intra_op: int = 1, limiter: threading.Semaphore | None = None,
                 provider: str = CPU) -> None:
        row = available(provider)
        self.session = ort.InferenceSession(str(path), session_options(intra_op), providers=list(row.providers),
                                            provider_options=[row.options.get(p, {}) for p in row.providers])
        self.provider = self.session.get_providers()[0]
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        check_graph(path, self.input_names, [o.name for o in self.session.get_outputs()])
        self._limiter = budget(limiter, row.thread_budget)

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: arrays[name] for name in self.input_names}
        with self._limiter:
            (logits,) = self.session.run([OUTPUT_NAME], feeds)
        return logits
