"""Dynamic batching: one queue and one owner task per variant.

Routes tokenize in a worker thread, then `submit` the rows and await their logits. The
owner task takes the oldest job and whatever else waits, up to `ROUND_BATCHES` batches'
worth of texts, waiting at most `max_delay` for company; grouping.py cuts that round into
runs of like lengths (each within `max_batch_size` texts and `max_batch_tokens` padded
tokens). The runs go to the backend one after the other, or up to `backend.parallel` side
by side where a variant's runs take fewer threads than the budget holds (a run starts as
soon as one of those places is free). The owner takes the next round only once a place
is free, so while runs compute, new jobs queue up and under load rounds grow by
themselves; when idle, a lone request runs at once (with the default delay of 0).
A request with more texts than a batch may hold is split into several jobs and put back
together; a single text over the token budget runs alone. The queue is bounded; a full
queue refuses new requests (429) instead of letting latency grow without end. Jobs whose
client went away before their turn are dropped unrun, and a fault inside the owner fails
the jobs it held, never the owner.

Each run is padded by variant/tokenization.py's rule (a lone row unpadded, several rows
to their longest row's length bucket), the rule `compressor search` and `evaluate`
measure by, so a runtime sees a dozen shapes and its memory arena stops growing after
warm-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from service.errors import BackendFailure, DeadlineExceeded, Overloaded, redact
from service.grouping import group
from service.metrics import Metrics
from variant.backends import Backend
from variant.tokenization import (
    MAX_BATCH_SIZE,
    MAX_BATCH_TOKENS,
    Row,
    chunks,
    pad,
    padded_length,
)

log = logging.getLogger("slimserve.batching")
ROUND_BATCHES = 4  # batches' worth of texts the owner takes off the queue to sort by length


@dataclass(frozen=True)
class Limits:
    max_batch_size: int = MAX_BATCH_SIZE
    max_batch_tokens: int = MAX_BATCH_TOKENS
    max_delay: float = 0.0  # seconds to wait for company once a job is first in line
    max_queue: int = 256  # jobs waiting, per variant
    enabled: bool = True  # off: every request runs alone


@dataclass(frozen=True)
class Result:
    logits: np.ndarray  # [rows, labels]
    queue_seconds: float
    inference_seconds: float


@dataclass
class Job:
    rows: list[Row]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    deadline: float | None = None  # time.perf_counter() past which no one waits for the answer

    @property
    def longest(self) -> int:
        return max(len(r.ids) for r in self.rows)


class Batcher:
    def __init__(self, name: str, backend: Backend, pad_token: int, max_length: int, limits: Limits,
                 metrics: Metrics) -> None:
        self.name, self.backend, self.pad_token, self.max_length = name, backend, pad_token, max_length
        self.limits, self.metrics = limits, metrics
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue(limits.max_queue)
        self._task: asyncio.Task | None = None
        self._places = asyncio.Semaphore(backend.parallel)  # runs computing at once
        self._running: set[asyncio.Task] = set()
        self.runs = 0  # batches run, for tests and logs

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Finish what is queued, then end the owner task. A job submitted later (a
        request that found this variant just before a reload replaced it) runs alone."""
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            await self._queue.put(None)
        await asyncio.gather(task, return_exceptions=True)

    @property
    def serving(self) -> bool:
        return self._task is not None and not self._task.done()

    def load(self) -> float:
        """How full the queue is, 0 to 1."""
        return self._queue.qsize() / self.limits.max_queue

    async def submit(self, rows: list[Row], deadline: float | None = None) -> Result:
        loop = asyncio.get_running_loop()
        jobs = [Job(chunk, loop.create_future(), deadline=deadline)
                for chunk in chunks(rows, self.max_length, self.limits.max_batch_size, self.limits.max_batch_tokens)]
        if not self.serving:
            for job in jobs:
                await self._run([job])
        elif self._queue.maxsize - self._queue.qsize() < len(jobs):
            raise Overloaded(f"model {self.name!r} has {self._queue.qsize()} requests waiting; retry later")
        else:
            for job in jobs:
                self._queue.put_nowait(job)
            self.metrics.queue_depth.labels(self.name).set(self._queue.qsize())
        # The client hears at its deadline, not when its turn would have come; the jobs are
        # then cancelled, so the owner drops them unrun.
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        try:
            results = await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), timeout)
        except BaseException as exc:
            for job in jobs:  # the client went away, a piece failed or time ran out: drop the rest unrun
                job.future.cancel()
            if isinstance(exc, TimeoutError):
                exc = DeadlineExceeded(f"model {self.name!r}: the request's deadline passed before its answer")
            if isinstance(exc, DeadlineExceeded):  # counted once per request, however many jobs it was
                self.metrics.deadline_exceeded.labels(self.name).inc()
                raise exc from None
            raise
        if len(results) == 1:
            return results[0]
        return Result(np.concatenate([r.logits for r in results]), max(r.queue_seconds for r in results),
                      sum(r.inference_seconds for r in results))

    async def _take(self) -> tuple[list[Job], bool]:
        """The next round: the oldest job and what waits behind it, and whether the queue
        said stop meanwhile."""
        first = await self._queue.get()
        if first is None:
            return [], True
        round_, rows = [first], len(first.rows)
        deadline = first.enqueued + self.limits.max_delay  # the wait counts from arrival
        while self.limits.enabled and rows < ROUND_BATCHES * self.limits.max_batch_size:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if job is None:
                return round_, True
            round_.append(job)
            rows += len(job.rows)
        return round_, False

    async def _serve(self) -> None:
        stopping = False
        try:
            while not stopping or not self._queue.empty():
                await self._places.acquire()  # the round is taken once a run could start
                self._places.release()
                round_, stopping = await self._take()
                waiting = [job for job in round_ if not job.future.done()]  # done: cancelled, its client went away
                self.metrics.queue_depth.labels(self.name).set(self._queue.qsize())
                runs = group([(len(job.rows), job.longest) for job in waiting], self.max_length,
                             self.limits.max_batch_size, self.limits.max_batch_tokens)
                for run in runs:
                    await self._places.acquire()
                    jobs = self._in_time([waiting[i] for i in run if not waiting[i].future.done()])
                    if not jobs:
                        self._places.release()
                        continue
                    task = asyncio.get_running_loop().create_task(self._run_in_place(jobs))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
        finally:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _run_in_place(self, jobs: list[Job]) -> None:
        try:
            await self._run(jobs)
        finally:
            self._places.release()

    def _in_time(self, jobs: list[Job]) -> list[Job]:
        """`jobs` but those past their deadline, which are answered 504 without running."""
        now = time.perf_counter()
        for job in jobs:
            if job.deadline is not None and job.deadline <= now:
                job.future.set_exception(DeadlineExceeded(
                    f"model {self.name!r}: the request's deadline passed after {now - job.enqueued:.3f} s in the queue"))
        return [job for job in jobs if not job.future.done()]

    async def _run(self, batch: list[Job]) -> None:
        rows = [r for job in batch for r in job.rows]
        started = time.perf_counter()
        for job in batch:
            self.metrics.queue_duration.labels(self.name).observe(started - job.enqueued)
        try:
            padded = pad(rows, padded_length(rows, self.max_length), self.pad_token)
            logits = await asyncio.to_thread(self.backend.run, padded.arrays)
            if logits.shape[0] != len(rows):
                raise ValueError(f"{logits.shape[0]} rows of logits for {len(rows)} inputs")
        except Exception as exc:  # noqa: BLE001 — a model fault fails this batch's requests only
            log.warning("model %s failed on a batch of %d: %s", self.name, len(rows), exc)
            failure = BackendFailure(f"model {self.name!r} failed on this batch: {redact(str(exc))}")
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(failure)
            return
        seconds = time.perf_counter() - started
        self.runs += 1
        self.metrics.inference_duration.labels(self.name).observe(seconds)
        self.metrics.batch_size.labels(self.name).observe(len(rows))
        self.metrics.observe_tokens(self.name, padded.tokens, padded.arrays["input_ids"].size)
        start = 0
        for job in batch:
            part = logits[start:start + len(job.rows)]
            start += len(job.rows)
            if job.future.done():
                continue
            if not np.isfinite(part).all():
                job.future.set_exception(BackendFailure(f"model {self.name!r} returned non-finite logits"))
            else:
                job.future.set_result(Result(part, started - job.enqueued, seconds))
