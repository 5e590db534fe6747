"""Texts → scores: the one path every route that runs a model goes through.

`Inference`, built once per app, is what the model routes call: a route looks the name
up once (`Inference.lookup`) and hands what it found to `Inference.answer`. A plain
variant: tokenize in a worker thread, hand the rows to the variant's batcher (which
refuses non-finite logits), and read what comes back as the head's task says
(variant/heads.py). A cascade: every input through the fast variant, those it is unsure
of through the reference (variant/cascade.py's rule). Shadow sampling mirrors a random
fraction of a variant's inputs to the reference (see `Serving.reference`) after the
response has gone, and counts agreement.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.errors import PayloadTooLarge, ServiceError
from service.metrics import Metrics
from service.repository import Variant
from service.serving import Cascade, Serving
from variant import cascade, heads
from variant.heads import Task
from variant.tokenization import InputTooLong, Row, TextInput, tokenize

log = logging.getLogger("slimserve.inference")


@dataclass(frozen=True)
class Outcome:
    logits: np.ndarray  # [inputs, labels], as the model returned them
    scores: np.ndarray  # the logits read as the task says (heads.activate)
    labels: list[str]
    task: Task
    tokenization_seconds: float
    queue_seconds: float
    inference_seconds: float
    digest: str  # digest(s) of the variant(s) that answered


def rows_of(variant: Variant, inputs: list[TextInput], truncate: bool) -> list[Row]:
    try:
        return tokenize(variant.opened.tokenizer, inputs, truncate)
    except InputTooLong as exc:
        raise PayloadTooLarge(str(exc)) from None


async def run_variant(variant: Variant, inputs: list[TextInput], truncate: bool, metrics: Metrics,
                      deadline: float | None = None) -> Outcome:
    """`variant`'s answer; its batcher drops the request unrun (504) once `deadline`
    (a time.perf_counter() time) has passed."""
    opened = variant.opened
    started = time.perf_counter()
    rows = await run_in_threadpool(rows_of, variant, inputs, truncate)
    tokenization = time.perf_counter() - started
    metrics.tokenization_duration.labels(variant.name).observe(tokenization)
    result = await variant.batcher.submit(rows, deadline)
    return Outcome(result.logits, heads.activate(opened.task, result.logits.astype(np.float64)), opened.labels,
                   opened.task, tokenization, result.queue_seconds, result.inference_seconds, opened.digest)


async def run_cascade(target: Cascade, inputs: list[TextInput], truncate: bool, metrics: Metrics,
                      deadline: float | None = None) -> Outcome:
    """Every input through the fast variant; those it is unsure of through the reference,
    whose answers replace the fast ones."""
    fast = await run_variant(target.fast, inputs, truncate, metrics, deadline)
    rows = cascade.unsure(fast.scores, target.spec.threshold)
    metrics.cascade_inputs.labels(target.name).inc(len(inputs))
    if rows.size == 0:
        return fast
    metrics.cascade_fallbacks.labels(target.name).inc(rows.size)
    reference = await run_variant(target.reference, [inputs[i] for i in rows], truncate, metrics, deadline)
    return dataclasses.replace(
        fast, logits=cascade.merge(fast.logits, rows, reference.logits),
        scores=cascade.merge(fast.scores, rows, reference.scores),
        tokenization_seconds=fast.tokenization_seconds + reference.tokenization_seconds,
        queue_seconds=fast.queue_seconds + reference.queue_seconds,
        inference_seconds=fast.inference_seconds + reference.inference_seconds,
        digest=f"{fast.digest},{reference.digest}")


class Shadow:
    """Mirrors `rate` of each variant's inputs to the reference, off the request path.

    The reference is `Serving.reference(configured)`, looked up at each request so a
    reload or a retired variant is followed; with none, nothing is mirrored.
    Mirrors yield to live traffic: a sample is dropped (and counted as dropped) when
    `MAX_PENDING` comparisons are already waiting or the reference's queue is over half
    full, so shadowing never makes the reference answer 429 to a client."""

    MAX_PENDING = 64

    def __init__(self, rate: float, configured: str | None, metrics: Metrics,
                 threshold: float = heads.THRESHOLD) -> None:
        self.rate, self.configured, self.metrics, self.threshold = rate, configured, metrics, threshold
        self._random = random.Random()
        self._tasks: set[asyncio.Task] = set()

    def sample(self, serving: Serving, name: str, inputs: list[TextInput], outcome: Outcome, truncate: bool) -> None:
        if self.rate <= 0:
            return
        reference_name = serving.reference(self.configured)
        if reference_name is None or name == reference_name:
            return
        picked = [i for i in range(len(inputs)) if self._random.random() < self.rate]
        if not picked:
            return
        try:
            reference = serving.variant(reference_name)
        except ServiceError:  # not served (any more): nothing to compare with
            reference = None
        # A reference with another head cannot agree or disagree: nothing to compare with.
        comparable = reference is not None and heads.comparable(
            name, (outcome.task, tuple(outcome.labels)), reference_name, reference.opened.head) is None
        if not comparable or len(self._tasks) >= self.MAX_PENDING or reference.batcher.load() > 0.5:
            self.metrics.shadow_dropped.labels(name).inc(len(picked))
            return
        task = asyncio.get_running_loop().create_task(
            self._compare(name, reference, [inputs[i] for i in picked], outcome.scores[picked], outcome, truncate))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(self, name: str, ready: Variant, inputs: list[TextInput], scores: np.ndarray,
                       outcome: Outcome, truncate: bool) -> None:
        """Agreement as the task defines it (heads.row_agreement: a top-1 match, or the
        share of labels decided alike, per input), and the difference of the deciding
        scores (for regression, of the scores themselves: the histogram's mean is the MAE)."""
        try:
            reference = await run_variant(ready, inputs, truncate, self.metrics)
        except ServiceError as exc:  # the reference is busy or gone: skip, never fail the variant
            self.metrics.shadow_dropped.labels(name).inc(len(inputs))
            log.debug("shadow comparison for %s dropped: %s", name, exc.message)
            return
        self.metrics.shadow_inputs.labels(name).inc(len(inputs))
        agreement = heads.row_agreement(outcome.task, scores, reference.scores, self.threshold)
        if agreement is not None:
            self.metrics.shadow_agreements.labels(name).inc(float(agreement.sum()))
        for difference in heads.score_difference(outcome.task, scores, reference.scores):
            self.metrics.shadow_difference.labels(name).observe(float(difference))

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Inference:
    """The one call the model routes make (v1 classify, v2 infer, rerank), over the set the
    app serves at the time of the call (`serving`, which a reload swaps)."""

    def __init__(self, serving: Callable[[], Serving], metrics: Metrics, shadow: Shadow) -> None:
        self.serving, self.metrics, self.shadow = serving, metrics, shadow

    def lookup(self, name: str, key: str | None = None) -> Variant | Cascade:
        """`Serving.lookup`: a route's name becomes one of its arms, the same one for the same `key`."""
        return self.serving().lookup(name, key)

    async def answer(self, target: Variant | Cascade, inputs: list[TextInput], truncate: bool,
                     deadline: float | None = None) -> Outcome:
        """`target` (from `lookup`) on the inputs, unless `deadline` passes before its turn
        (504); a variant's inputs may be mirrored."""
        if isinstance(target, Cascade):  # cascades are not mirrored: their variants answer for them
            return await run_cascade(target, inputs, truncate, self.metrics, deadline)
        outcome = await run_variant(target, inputs, truncate, self.metrics, deadline)
        self.shadow.sample(self.serving(), target.name, inputs, outcome, truncate)
        return outcome
