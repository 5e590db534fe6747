"""The thread budget: sessions of several variants never compute more at once than it allows."""

import threading
import time

import numpy as np
import pytest
from conftest import toy_graph, wait_until

from service.settings import Settings
from variant.backends import ThreadBudget
from variant.backends.ort import OrtBackend
from variant.backends.providers import EXECUTION_PROVIDERS, ExecutionProvider
from variant.manifest import Runtime


class CountingSession:
    """Stands in for an InferenceSession and records how many runs overlap."""

    def __init__(self, counter: dict) -> None:
        self.counter = counter

    def run(self, outputs, feeds):
        with self.counter["lock"]:
            self.counter["now"] += 1
            self.counter["most"] = max(self.counter["most"], self.counter["now"])
        # Runs that hold every slot meet here, so the limit is reached however the threads
        # are scheduled; the short hold is the run's work, giving an extra run a chance to
        # get in if the limiter let it.
        self.counter["barrier"].wait()
        time.sleep(0.02)
        with self.counter["lock"]:
            self.counter["now"] -= 1
        return [np.zeros((len(feeds["input_ids"]), 2), dtype=np.float32)]


@pytest.mark.parametrize("slots", [1, 2])
def test_the_shared_budget_bounds_concurrent_runs_across_variants(tmp_path, slots):
    limiter = ThreadBudget(slots)
    counter = {"lock": threading.Lock(), "now": 0, "most": 0, "barrier": threading.Barrier(slots, timeout=30)}
    for name in ("a", "b"):
        toy_graph(tmp_path / f"{name}.onnx")
    backends = [OrtBackend(tmp_path / f"{name}.onnx", 1, 2, limiter) for name in ("a", "b")]
    for backend in backends:
        backend.session = CountingSession(counter)
    arrays = {name: np.ones((1, 4), dtype=np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
    threads = [threading.Thread(target=backends[i % 2].run, args=(arrays,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter["most"] == slots


def test_a_provider_off_the_thread_budget_runs_without_a_slot(tmp_path, monkeypatch):
    # A new provider is one row; a row whose runs leave the CPU (a GPU's) takes no slot.
    monkeypatch.setitem(EXECUTION_PROVIDERS, "offload",
                        ExecutionProvider(("CPUExecutionProvider",), thread_budget=False))
    toy_graph(tmp_path / "m.onnx")
    limiter = ThreadBudget(1)
    backend = OrtBackend(tmp_path / "m.onnx", 1, 1, limiter, provider="offload")
    ones = np.ones((1, 4), dtype=np.int64)
    finished = threading.Event()
    with limiter.hold(1):  # the budget is spent: a run that needed a thread would wait
        threading.Thread(target=lambda: (backend.run({"input_ids": ones, "attention_mask": ones}), finished.set()),
                         daemon=True).start()
        assert finished.wait(30)


def test_a_wide_run_is_not_passed_over_by_narrow_ones():
    budget, order = ThreadBudget(2), []
    first = budget.hold(1)
    first.__enter__()

    def take(threads: int, name: str) -> None:
        with budget.hold(threads):
            order.append(name)

    wide = threading.Thread(target=take, args=(2, "wide"))
    wide.start()
    wait_until(lambda: len(budget._line) == 1, "the two-thread run to wait in line")
    narrow = threading.Thread(target=take, args=(1, "narrow"))  # it would fit now, but the wide run came first
    narrow.start()
    wait_until(lambda: len(budget._line) == 2, "the one-thread run to wait behind it")
    assert order == []
    first.__exit__(None, None, None)
    wide.join(30)
    narrow.join(30)
    assert order == ["wide", "narrow"]


def test_held_threads_never_exceed_the_budget():
    budget, lock, held = ThreadBudget(3), threading.Lock(), {"now": 0, "most": 0}

    def run(threads: int) -> None:
        for _ in range(50):
            with budget.hold(threads):
                with lock:
                    held["now"] += threads
                    held["most"] = max(held["most"], held["now"])
                with lock:
                    held["now"] -= threads

    workers = [threading.Thread(target=run, args=(t,)) for t in (1, 2, 3, 1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert 1 <= held["most"] <= 3


def test_every_row_of_the_provider_table_is_a_setting():
    for name in EXECUTION_PROVIDERS:
        assert Settings(execution_provider=name).execution_provider == name


@pytest.mark.parametrize("threads, intra_op, recorded, runs, per_run", [
    (2, None, None, 1, 2), (2, 1, None, 2, 1), (8, 2, None, 4, 2), (2, 4, None, 1, 2),
    (2, None, 1, 2, 1), (8, None, 2, 4, 2), (2, None, 4, 1, 2), (4, 2, 1, 2, 2),
])
def test_budget_arithmetic(threads, intra_op, recorded, runs, per_run):
    # The setting wins over the manifest's threads per run, and neither exceeds the budget.
    settings = Settings(threads=threads, intra_op_threads=intra_op)
    runtime = settings.runtime_for(Runtime(threads=recorded))
    assert settings.parallel_runs(runtime) == runs and runtime.threads == per_run
    assert settings.parallel_runs(runtime) * runtime.threads <= threads


def test_a_graph_without_logits_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx", reason="building a graph needs onnx (the [compress] extra)")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["out"])], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.INT64, [1, 4])])
    onnx.save(helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="no 'logits' output"):
        OrtBackend(tmp_path / "m.onnx")
