"""The per-variant batcher, driven directly with a fake backend (tests/fakes.py) whose
events say when the model is busy: the tests wait on those, never on the clock."""

import asyncio
import time

import numpy as np
import pytest
from conftest import wait_until_async
from fakes import FakeBackend

from service.batching import Batcher, Limits
from service.errors import BackendFailure, DeadlineExceeded, Overloaded
from service.metrics import Metrics
from variant.tokenization import Row, bucket


def row(*ids: int) -> Row:
    return Row(np.array(ids, dtype=np.int64), np.zeros(len(ids), dtype=np.int64))


def run(coro):
    return asyncio.run(coro)


async def started(backend, **limits) -> Batcher:
    batcher = Batcher("m", backend, 0, 128, Limits(**limits), Metrics())
    batcher.start()
    return batcher


def test_concurrent_requests_share_one_run():
    async def scenario():
        backend = FakeBackend()
        batcher = await started(backend, max_delay=0.2)
        results = await asyncio.gather(*(batcher.submit([row(i, 1), row(i)]) for i in range(1, 6)))
        await batcher.stop()
        return backend, batcher, results

    backend, batcher, results = run(scenario())
    assert batcher.runs == 1 and backend.shapes == [(10, bucket(2, 128))]  # 10 rows padded to the first bucket
    for i, result in enumerate(results, start=1):
        assert result.logits.tolist() == [[i + 1, 2], [i, 1]]  # each request gets its own rows back


def test_batches_respect_size_and_token_budget():
    async def scenario(**limits):
        backend = FakeBackend()
        batcher = await started(backend, max_delay=0.2, **limits)
        await asyncio.gather(*(batcher.submit([row(*range(1, 30))] * 2) for _ in range(4)))
        await batcher.stop()
        return backend.shapes

    assert run(scenario(max_batch_size=4)) == [(4, 32), (4, 32)]
    assert run(scenario(max_batch_tokens=64)) == [(2, 32)] * 4  # 2 rows × 32 padded tokens
    assert run(scenario(enabled=False)) == [(2, 32)] * 4


def test_a_request_larger_than_a_batch_is_split_and_rejoined():
    async def scenario(**limits):
        backend = FakeBackend()
        batcher = await started(backend, **limits)
        result = await batcher.submit([row(i) for i in range(1, 6)])
        await batcher.stop()
        return backend.shapes, result

    first = bucket(1, 128)
    shapes, result = run(scenario(max_batch_size=2))
    assert shapes == [(2, first), (2, first), (1, 1)]  # the lone last row runs unpadded
    assert result.logits[:, 0].tolist() == [1, 2, 3, 4, 5]  # back in the request's order
    shapes, _ = run(scenario(max_batch_tokens=2 * first))  # two rows of the first bucket per run
    assert shapes == [(2, first), (2, first), (1, 1)]


def test_several_rows_pad_to_a_length_bucket_and_a_lone_row_to_its_own_length():
    async def scenario(rows):
        backend = FakeBackend()
        batcher = await started(backend)
        await batcher.submit(rows)
        await batcher.stop()
        return backend.shapes

    assert run(scenario([row(*range(1, 21))])) == [(1, 20)]
    assert run(scenario([row(*range(1, 21)), row(7)])) == [(2, bucket(20, 128))]


def test_one_text_over_the_token_budget_still_runs():
    async def scenario():
        backend = FakeBackend()
        batcher = await started(backend, max_batch_tokens=16)
        result = await batcher.submit([row(*range(100))])
        await batcher.stop()
        return backend.shapes, result

    shapes, result = run(scenario())
    assert shapes == [(1, 100)] and result.logits.shape == (1, 2)  # a lone row runs unpadded


async def busy(backend, batcher) -> asyncio.Future:
    """Hold the model inside a run of one job; returns that job's future."""
    backend.gate.clear()
    first = asyncio.ensure_future(batcher.submit([row(1)]))
    await wait_until_async(backend.running.is_set, "the owner to take the first job and start its run")
    return first


def queued(batcher, jobs: int):
    """A predicate: `jobs` wait in the batcher's queue."""
    return lambda: round(batcher.load() * batcher.limits.max_queue) == jobs


def test_a_full_queue_answers_overloaded():
    async def scenario():
        backend = FakeBackend()
        batcher = await started(backend, max_queue=2)
        first = await busy(backend, batcher)
        waiting = [asyncio.ensure_future(batcher.submit([row(2)])) for _ in range(2)]
        await wait_until_async(queued(batcher, 2), "two jobs to fill the queue")
        with pytest.raises(Overloaded, match="'m' has 2 requests waiting"):
            await batcher.submit([row(3)])
        backend.gate.set()
        await asyncio.gather(first, *waiting)
        await batcher.stop()
        return backend.shapes

    assert run(scenario()) == [(1, 1), (2, bucket(1, 128))]


def test_cancelled_jobs_are_not_run():
    async def scenario():
        backend = FakeBackend()
        batcher = await started(backend)
        first = await busy(backend, batcher)
        gone = asyncio.ensure_future(batcher.submit([row(7, 7, 7)]))
        await wait_until_async(queued(batcher, 1), "the job to be queued behind the run")
        gone.cancel()  # its client disconnected while it waited
        backend.gate.set()
        await first
        await batcher.stop()
        return backend.shapes, gone.cancelled()

    assert run(scenario()) == ([(1, 1)], True)


@pytest.mark.parametrize("fault, message", [("raise", "boom"), ("short", "rows of logits")])
def test_a_model_fault_fails_its_batch_and_the_owner_keeps_serving(fault, message):
    async def scenario():
        backend = FakeBackend(fault=fault)
        batcher = await started(backend)
        with pytest.raises(BackendFailure, match=message):
            await batcher.submit([row(1), row(2)])
        backend.fault = None
        result = await batcher.submit([row(3)])
        await batcher.stop()
        return result

    assert run(scenario()).logits.tolist() == [[3, 1]]


def test_stop_finishes_queued_work_and_late_jobs_run_alone():
    async def scenario():
        backend = FakeBackend()
        batcher = await started(backend, max_delay=0.05)
        first = await busy(backend, batcher)
        queued_jobs = [asyncio.ensure_future(batcher.submit([row(i)])) for i in range(3)]
        await wait_until_async(queued(batcher, 3), "three jobs queued behind the run")
        stopping = asyncio.ensure_future(batcher.stop())
        backend.gate.set()
        await stopping
        assert first.done() and all(q.done() for q in queued_jobs)  # stop returned only once they ran
        late = await batcher.submit([row(9)])
        return backend.shapes, [q.result().logits.tolist() for q in queued_jobs], late.logits.tolist()

    shapes, queued_logits, late = run(scenario())
    assert queued_logits == [[[0, 1]], [[1, 1]], [[2, 1]]] and late == [[9, 1]]
    assert shapes == [(1, 1), (3, bucket(1, 128)), (1, 1)]  # the three queued ran as one batch; the late one alone


def test_a_backend_that_runs_two_at_once_gets_a_second_run_while_the_first_computes():
    async def scenario():
        backend = FakeBackend()
        backend.parallel = 2
        batcher = await started(backend)
        backend.hold()
        first = asyncio.create_task(batcher.submit([row(1, 2, 3)]))
        await wait_until_async(backend.running.is_set, "the first run to start")
        second = asyncio.create_task(batcher.submit([row(4, 5)]))
        await wait_until_async(lambda: len(backend.entered) == 2, "a second run beside the held one")
        backend.release()
        results = await asyncio.gather(first, second)
        await batcher.stop()
        return results

    first, second = run(scenario())
    assert first.logits.tolist() == [[6, 3]] and second.logits.tolist() == [[9, 2]]


def test_a_deadline_is_answered_when_it_passes_while_the_model_is_still_busy():
    async def scenario():
        backend = FakeBackend()
        batcher = await started(backend)
        backend.hold()
        first = asyncio.create_task(batcher.submit([row(1, 2)]))
        await wait_until_async(backend.running.is_set, "the first run to start")
        with pytest.raises(DeadlineExceeded):
            await batcher.submit([row(3)], deadline=time.perf_counter() + 0.05)
        busy = not backend.gate.is_set()  # the answer came before the model was free
        backend.release()
        await first
        await batcher.stop()
        return busy, backend.entered

    busy, entered = run(scenario())
    assert busy and entered == [1]  # the expired request never ran
