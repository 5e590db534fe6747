"""What a variant's graph runs on: the `Backend` protocol and opening one by the table.

One module per runtime (ort.py: ONNX Runtime; openvino.py: the optional `openvino`
package), each named by its row of variant/runtimes.py and defining `create(path,
precision, threads, parallel, limiter, provider)` and `supported(precision)`. The service
takes a `BackendFactory` (a variant's model.onnx and runtime → backend), so tests can
serve on a fake.

Thread budget: a CPU run uses `threads` threads (its runtime's `threads`), and up to
`parallel` runs of one backend may compute side by side (one thread per run with two runs
at once can serve more than two threads per run one at a time: a short run leaves a
second thread mostly idle). A run computes only while it holds its threads of `limiter`,
the one ThreadBudget of the process, so however many variants are loaded and however
many requests arrive, at most the budget's threads compute at once. A provider that does
not compute on the CPU (providers.py) runs without holding any.

A variant recorded for a backend whose package is not installed serves on ONNX Runtime
with a warning, and a precision the CPU lacks falls back to f32: a backend's `runtime`
says what actually runs.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import logging
import threading
from collections.abc import Callable, Iterator
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
    runtime: Runtime  # the backend, precision and threads per run it runs at, after any fallback
    parallel: int  # runs that may compute side by side

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


class ThreadBudget:
    """The CPU threads every run of the process computes on, held by each run while it
    computes. First come, first served: a run that needs two threads is not passed over
    for ever by one-thread runs that keep arriving."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._free = threads
        self._line: collections.deque[object] = collections.deque()
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, threads: int) -> Iterator[None]:
        threads = min(threads, self.threads)
        ticket = object()
        with self._changed:
            self._line.append(ticket)
            self._changed.wait_for(lambda: self._line[0] is ticket and self._free >= threads)
            self._line.popleft()
            self._free -= threads
            self._changed.notify_all()  # the next in line may fit in what is left
        try:
            yield
        finally:
            with self._changed:
                self._free += threads
                self._changed.notify_all()


def budget(limiter: ThreadBudget | None, threads: int,
           computes_on_cpu: bool = True) -> Callable[[], contextlib.AbstractContextManager]:
    """What a run holds while it computes: `threads` of the process's CPU budget, or nothing."""
    if limiter is None or not computes_on_cpu:
        return contextlib.nullcontext
    return lambda: limiter.hold(threads)


def module_of(backend: str):
    """The module that runs `backend`; ImportError where its package is not installed."""
    return importlib.import_module(BACKENDS[backend].module)


def open_backend(path: Path, runtime: Runtime, parallel: int = 1, limiter: ThreadBudget | None = None,
                 provider: str = CPU) -> Backend:
    """The backend `runtime` names for the graph at `path`, `runtime.threads` threads per run
    (one where unset) and up to `parallel` runs at once; ONNX Runtime where its package is
    not installed. `provider` is ONNX Runtime's execution provider (providers.py)."""
    try:
        module = module_of(runtime.backend)
    except ImportError:
        log.warning("%s is recorded to run on %s, which is not installed (pip install 'slimserve[%s]'); serving it "
                    "on %s", path.parent.name, runtime.backend, BACKENDS[runtime.backend].extra, DEFAULT_BACKEND)
        module, runtime = module_of(DEFAULT_BACKEND), Runtime(threads=runtime.threads)
    return module.create(path, runtime.precision, runtime.threads or 1, parallel, limiter, provider)


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
