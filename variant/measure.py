"""Answers and latency of a variant, run exactly as the service runs it.

`compressor search`, `evaluate` and `report` and the benchmarks measure here, so what
they report is what a client of the service gets: each run tokenizes its texts, cuts
them into the pieces one run may hold and pads each by the service's rule (a lone row
unpadded, several rows to their longest row's length bucket: tokenization.py), then runs
on the variant's backend with the threads it was opened with. Every shape a timed run
meets runs once before the clock starts, as the service warms a variant up before it
serves. A run's time includes tokenizing and padding, which the service pays too.

`latency` is the time of a request alone (what one client waits); `throughput` the time
per request with the cores busy: as many requests computing side by side as the service
runs of the variant at once (its backend's `parallel`), the wall time over their count.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from variant import heads
from variant.folder import Opened
from variant.tokenization import (
    MAX_BATCH_SIZE,
    MAX_BATCH_TOKENS,
    TextInput,
    chunks,
    pad,
    pad_id,
    padded_length,
    tokenize,
)

RUNS = {1: 100, 32: 20}  # timed runs per batch size
# A text's scores may move by at most this between running alone and sharing a run with
# others (padded, in a batch of 8 or 32 mixed lengths) for a variant to count as batch-invariant.
INVARIANCE_LIMIT = 1e-4
VARIATION_BATCHES = (8, 32)
T = TypeVar("T")


def arrays_as_served(opened: Opened, inputs: list[TextInput], max_batch_size: int = MAX_BATCH_SIZE,
                     max_batch_tokens: int = MAX_BATCH_TOKENS) -> list[dict[str, np.ndarray]]:
    """The padded arrays of each run the service makes for `inputs` handed to it together."""
    rows = tokenize(opened.tokenizer, inputs)
    limit = opened.manifest.max_length
    return [pad(piece, padded_length(piece, limit), pad_id(opened.tokenizer)).arrays
            for piece in chunks(rows, limit, max_batch_size, max_batch_tokens)]


def logits(opened: Opened, inputs: list[TextInput]) -> np.ndarray:
    """Logits [inputs, labels] for `inputs` handed to the service together."""
    return np.concatenate([opened.backend.run(a) for a in arrays_as_served(opened, inputs)])


def answers(opened: Opened, inputs: list[TextInput], batch: int = MAX_BATCH_SIZE) -> np.ndarray:
    """Scores [inputs, labels] as the service answers them (heads.activate), the inputs run
    in batches of `batch` texts of like length so padding stays small."""
    order = sorted(range(len(inputs)), key=lambda i: len(str(inputs[i])))
    out = np.empty((len(inputs), len(opened.labels)))
    for start in range(0, len(inputs), batch):
        idx = order[start:start + batch]
        out[idx] = heads.activate(opened.task, logits(opened, [inputs[i] for i in idx]).astype(np.float64))
    return out


def groups(inputs: list[T], size: int, count: int) -> list[list[T]]:
    """`count` groups of `size` inputs, taken in turn from `inputs` (wrapping around)."""
    return [[inputs[(i * size + j) % len(inputs)] for j in range(size)] for i in range(count)]


def percentiles(times_ms: list[float]) -> dict[str, float]:
    p95 = statistics.quantiles(times_ms, n=20)[18] if len(times_ms) > 1 else times_ms[0]
    return {"p50": round(statistics.median(times_ms), 3), "p95": round(p95, 3)}


def time_runs(run: Callable[[T], object], items: list[T], warm: list[T]) -> dict[str, float]:
    """p50/p95 ms of `run` over `items`, after running each of `warm` once."""
    for item in warm:
        run(item)
    times = []
    for item in items:
        start = time.perf_counter()
        run(item)
        times.append((time.perf_counter() - start) * 1000)
    return percentiles(times)


def warm_set(opened: Opened, batches: list[list[TextInput]]) -> list[list[TextInput]]:
    """One batch per distinct padded shape among `batches`."""
    seen: dict[tuple, list[TextInput]] = {}
    for batch in batches:
        shapes = tuple(a["input_ids"].shape for a in arrays_as_served(opened, batch))
        seen.setdefault(shapes, batch)
    return list(seen.values())


def latency(opened: Opened, inputs: list[TextInput], sizes: tuple[int, ...] = (1, 32),
            runs: dict[int, int] = RUNS) -> dict[int, dict[str, float]]:
    """p50/p95 ms of one request of `size` texts at each size, the texts taken in turn."""
    measured = {}
    for size in sizes:
        batches = groups(inputs, size, runs[size])
        measured[size] = time_runs(lambda batch: logits(opened, batch), batches, warm_set(opened, batches))
    return measured


def throughput(opened: Opened, inputs: list[TextInput], size: int, count: int) -> float:
    """Milliseconds per request of `size` texts, `count` requests taken in turn from `inputs`,
    with `opened.backend.parallel` of them computing side by side."""
    batches = groups(inputs, size, count)
    streams = opened.backend.parallel
    with ThreadPoolExecutor(streams) as pool:
        # Every shape runs once per stream first: a runtime may keep state per thread (OpenVINO's requests).
        list(pool.map(lambda batch: logits(opened, batch), warm_set(opened, batches) * streams))
        start = time.perf_counter()
        list(pool.map(lambda batch: logits(opened, batch), batches))
        return round((time.perf_counter() - start) * 1000 / count, 3)


def batch_variation(opened: Opened, inputs: list[TextInput]) -> float:
    """The largest |Δ score| of an input between running alone and running in one request
    with its neighbours in `inputs` (VARIATION_BATCHES at a time, mixed lengths, so it is
    padded too): 0 where the runtime computes each row on its own, as fp32 graphs do;
    more where activations are scaled per batch (dynamic int8) or a runtime's kernels
    round differently by shape."""
    alone = np.concatenate([answers(opened, [x]) for x in inputs])
    worst = 0.0
    for size in VARIATION_BATCHES:
        for start in range(0, len(inputs), size):
            together = heads.activate(opened.task, logits(opened, inputs[start:start + size]).astype(np.float64))
            worst = max(worst, float(np.abs(together - alone[start:start + size]).max()))
    return worst
