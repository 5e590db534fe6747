"""Texts → class probabilities: the one path every route that classifies goes through.

A plain variant: tokenize in a worker thread, hand the rows to the variant's batcher,
softmax what comes back. A cascade: ask its fast variant first and its reference only for
the inputs the fast one is unsure of. Shadow sampling mirrors a random fraction of a
variant's inputs to the reference (see `Runtime.reference`) after the response has gone,
and counts agreement.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.cascade import CascadeSpec, softmax, unsure
from service.errors import BackendFailure, ModelNotFound, NotReady, ServiceError
from service.metrics import Metrics
from service.runtime import Runtime
from service.tokenization import TextInput, tokenize

log = logging.getLogger("slimserve.inference")


@dataclass(frozen=True)
class Outcome:
    logits: np.ndarray  # [inputs, labels], as the model returned them
    probabilities: np.ndarray  # softmax of the logits
    labels: list[str]
    queue_seconds: float
    inference_seconds: float
    digest: str  # manifest digest(s) of the variant(s) that answered


def labels_of(runtime: Runtime, name: str) -> list[str]:
    if name in runtime.cascades:
        name = runtime.cascades[name].fast
    variant = runtime.variants.get(name)
    if variant is None or variant.manifest is None:
        raise NotReady(f"model {name!r} is not ready")
    return variant.manifest.labels


def check_servable(runtime: Runtime, name: str) -> None:
    if name in runtime.cascades:
        problem = runtime.cascade_problem(name)
        if problem:
            raise NotReady(problem)
        return
    if name in runtime.cascade_errors:
        raise NotReady(runtime.cascade_errors[name])
    variant = runtime.variants.get(name)
    if variant is None:
        raise ModelNotFound(f"model {name!r} not found")
    if name not in runtime.batchers:
        raise NotReady(f"model {name!r} is not ready: {variant.reason}")


async def run_variant(runtime: Runtime, name: str, inputs: list[TextInput], truncate: bool) -> Outcome:
    check_servable(runtime, name)
    variant = runtime.variants[name]
    # Taken before the wait: the folder watcher may retire the variant meanwhile, and a
    # stopped batcher still runs what it is handed.
    batcher = runtime.batchers[name]
    rows = await run_in_threadpool(tokenize, variant.tokenizer, inputs, truncate)
    result = await batcher.submit(rows)
    if not np.isfinite(result.logits).all():  # a broken export or an overflow: no answer beats a wrong one
        raise BackendFailure(f"model {name!r} returned non-finite scores (NaN or infinity)")
    return Outcome(result.logits, softmax(result.logits.astype(np.float64)), variant.manifest.labels,
                   result.queue_seconds, result.inference_seconds, variant.digest)


async def run_cascade(runtime: Runtime, name: str, spec: CascadeSpec, inputs: list[TextInput], truncate: bool,
                      metrics: Metrics) -> Outcome:
    fast = await run_variant(runtime, spec.fast, inputs, truncate)
    unsure_rows = unsure(fast.probabilities, spec.threshold)
    metrics.cascade_inputs.labels(name).inc(len(inputs))
    if unsure_rows.size == 0:
        return fast
    metrics.cascade_fallbacks.labels(name).inc(unsure_rows.size)
    reference = await run_variant(runtime, spec.reference, [inputs[i] for i in unsure_rows], truncate)
    logits, probabilities = fast.logits.copy(), fast.probabilities.copy()
    logits[unsure_rows], probabilities[unsure_rows] = reference.logits, reference.probabilities
    return Outcome(logits, probabilities, fast.labels, fast.queue_seconds + reference.queue_seconds,
                   fast.inference_seconds + reference.inference_seconds, f"{fast.digest},{reference.digest}")


class Shadow:
    """Mirrors `rate` of each variant's inputs to the reference, off the request path.

    The reference is `Runtime.reference(configured)`, looked up at each request so a
    reload or a retired variant is followed; with none, nothing is mirrored.
    Mirrors yield to live traffic: a sample is dropped (and counted as dropped) when
    `MAX_PENDING` comparisons are already waiting or the reference's queue is over half
    full, so shadowing never makes the reference answer 429 to a client."""

    MAX_PENDING = 64

    def __init__(self, rate: float, configured: str | None, metrics: Metrics) -> None:
        self.rate, self.configured, self.metrics = rate, configured, metrics
        self._random = random.Random()
        self._tasks: set[asyncio.Task] = set()

    def sample(self, runtime: Runtime, name: str, inputs: list[TextInput], outcome: Outcome, truncate: bool) -> None:
        if self.rate <= 0 or name not in runtime.variants:
            return
        reference = runtime.reference(self.configured)
        if reference is None or name == reference:
            return
        picked = [i for i in range(len(inputs)) if self._random.random() < self.rate]
        if not picked:
            return
        batcher = runtime.batchers.get(reference)
        if batcher is None or len(self._tasks) >= self.MAX_PENDING or batcher.load() > 0.5:
            self.metrics.shadow_dropped.labels(name).inc(len(picked))
            return
        task = asyncio.get_running_loop().create_task(
            self._compare(runtime, name, reference, [inputs[i] for i in picked], outcome.probabilities[picked],
                          outcome.labels, truncate))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(self, runtime: Runtime, name: str, reference_name: str, inputs: list[TextInput],
                       probabilities: np.ndarray, labels: list[str], truncate: bool) -> None:
        try:
            reference = await run_variant(runtime, reference_name, inputs, truncate)
        except ServiceError as exc:  # the reference is busy or gone: skip, never fail the variant
            self.metrics.shadow_dropped.labels(name).inc(len(inputs))
            log.debug("shadow comparison for %s dropped: %s", name, exc.message)
            return
        top = probabilities.argmax(axis=1)
        ref_top = reference.probabilities.argmax(axis=1)
        agree = sum(labels[a] == reference.labels[b] for a, b in zip(top, ref_top))
        self.metrics.shadow_inputs.labels(name).inc(len(inputs))
        self.metrics.shadow_agreements.labels(name).inc(agree)
        for row, label in enumerate(top):
            if labels[label] in reference.labels:  # same label set: compare the variant's top-1 probability
                other = reference.probabilities[row, reference.labels.index(labels[label])]
                self.metrics.shadow_difference.labels(name).observe(abs(probabilities[row, label] - other))

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def classify(runtime: Runtime, name: str, inputs: list[TextInput], truncate: bool, metrics: Metrics,
                   shadow: Shadow | None = None) -> Outcome:
    check_servable(runtime, name)
    if name in runtime.cascades:
        return await run_cascade(runtime, name, runtime.cascades[name], inputs, truncate, metrics)
    outcome = await run_variant(runtime, name, inputs, truncate)
    if shadow is not None:
        shadow.sample(runtime, name, inputs, outcome, truncate)
    return outcome
