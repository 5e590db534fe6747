"""ONNX Runtime as a backend: always installed, on the execution provider a setting names.

Spinning is off: an idle pool that spins would steal the cores another variant's session
is computing on. A provider this ONNX Runtime lacks (CUDA without onnxruntime-gpu, say)
logs a warning once per session and serves on the CPU, under the thread budget.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from variant.backends import OUTPUT_NAME, ThreadBudget, budget, check_graph
from variant.backends.providers import CPU, EXECUTION_PROVIDERS, ExecutionProvider
from variant.manifest import Precision, Runtime

log = logging.getLogger("slimserve.backend")


def supported(precision: Precision) -> bool:
    return precision == "f32"


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
    """One session; with one thread per run, runs side by side each compute in their own
    calling thread (a session may be run from several threads at once)."""

    def __init__(self, path: Path, threads: int = 1, parallel: int = 1, limiter: ThreadBudget | None = None,
                 provider: str = CPU) -> None:
        row = available(provider)
        self.runtime, self.parallel = Runtime(backend="onnxruntime", precision="f32", threads=threads), parallel
        self.session = ort.InferenceSession(str(path), session_options(threads), providers=list(row.providers),
                                            provider_options=[row.options.get(p, {}) for p in row.providers])
        self.provider = self.session.get_providers()[0]
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        check_graph(path, self.input_names, [o.name for o in self.session.get_outputs()])
        self._budget = budget(limiter, threads, row.thread_budget)

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: arrays[name] for name in self.input_names}
        with self._budget():
            (logits,) = self.session.run([OUTPUT_NAME], feeds)
        return logits


def create(path: Path, precision: Precision, threads: int, parallel: int, limiter: ThreadBudget | None,
           provider: str) -> OrtBackend:
    return OrtBackend(path, threads, parallel, limiter, provider)
