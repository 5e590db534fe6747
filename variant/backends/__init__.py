"""What a variant's graph runs on: the `Backend` protocol and opening one by the table.

One module per runtime (ort.py: ONNX Runtime; openvino.py: the optional `openvino`
package), each named by its row of variant/runtimes.py and defining `create(path,
precision, intra_op, limiter, provider)` and `supported(precision)`. The service takes a
`BackendFactory` (a variant's model.onnx and runtime → backend), so tests can serve on a fake.

Thread budget: a CPU run gets `intra_op` threads and runs only while it holds a slot of
`limiter`, a semaphore shared by every backend of the process and sized
threads // intra_op. So however many variants are loaded and however many requests
arrive, at most `threads` cores compute at once. A provider that does not compute on
the CPU (providers.py) runs without a slot.

A variant recorded for a backend whose package is not installed serves on ONNX Runtime
with a warning, and a precision the CPU lacks falls back to f32: a backend's `runtime`
says what actually runs.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from variant.backends.providers import CPU
from variant.manifest import Runtime
from variant.runtimes import BACKENDS, DEFAULT_BACKEND

OUTPUT_NAME = "logits"
REQUIRED_INPUTS = frozenset({"input_ids", "attention_mask"})

log = logging.getLogger("slimserve.backend")


class Backend(Protocol):
    input_names: tuple[str, ...]
    provider: str  # where it computes, for logs: "CPUExecutionProvider", "OpenVINO CPU", ...
    runtime: Runtime  # the backend and precision it runs at, after any fallback

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Logits [batch, labels] for a tokenized batch; arrays it takes no input for are ignored."""
        ...


BackendFactory = Callable[[Path, Runtime], Backend]  # a variant's model.onnx and recorded runtime → its backend


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


def module_of(backend: str):
    """The module that runs `backend`; ImportError where its package is not installed."""
    return importlib.import_module(BACKENDS[backend].module)


def open_backend(path: Path, runtime: Runtime, intra_op: int = 1, limiter: threading.Semaphore | None = None,
                 provider: str = CPU) -> Backend:
    """The backend `runtime` names for the graph at `path`; ONNX Runtime where its package is
    not installed. `provider` is ONNX Runtime's execution provider (providers.py)."""
    try:
        module = module_of(runtime.backend)
    except ImportError:
        log.warning("%s is recorded to run on %s, which is not installed (pip install 'slimserve[%s]'); serving it "
                    "on %s", path.parent.name, runtime.backend, BACKENDS[runtime.backend].extra, DEFAULT_BACKEND)
        module, runtime = module_of(DEFAULT_BACKEND), Runtime()
    return module.create(path, runtime.precision, intra_op, limiter, provider)


def runtimes() -> list[Runtime]:
    """Every backend and precision this process can run a variant at."""
    found = []
    for name, row in BACKENDS.items():
        try:
            module = module_of(name)
        except ImportError:
            continue
        found += [Runtime(backend=name, precision=p) for p in row.precisions if module.supported(p)]
    return found
