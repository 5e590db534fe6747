"""service/grouping.py: queued jobs cut into runs of like lengths within a run's limits."""

import random

from service.grouping import group
from variant.tokenization import bucket


def slots(run, sizes, max_length=128):
    rows = sum(sizes[i][0] for i in run)
    longest = max(sizes[i][1] for i in run)
    return rows * (longest if rows == 1 else bucket(longest, max_length))


def test_every_job_runs_once_and_runs_go_shortest_first():
    random.seed(3)
    sizes = [(random.randint(1, 3), random.randint(3, 60)) for _ in range(40)]
    runs = group(sizes, 128, 32, 2048)
    assert sorted(i for run in runs for i in run) == list(range(len(sizes)))
    tops = [max(sizes[i][1] for i in run) for run in runs]
    assert tops == sorted(tops)


def test_runs_stay_within_the_limits():
    random.seed(4)
    sizes = [(random.randint(1, 4), random.randint(3, 120)) for _ in range(60)]
    for run in group(sizes, 128, 16, 512):
        assert sum(sizes[i][0] for i in run) <= 16 or len(run) == 1
        assert slots(run, sizes) <= 512 or len(run) == 1


def test_a_job_over_the_limits_runs_alone():
    assert group([(40, 10), (1, 5)], 128, 32, 2048) == [[1], [0]]


def test_long_texts_do_not_make_short_ones_pad_to_their_length():
    sizes = [(1, 10)] * 24 + [(1, 100)] * 2
    runs = group(sizes, 128, 32, 2048)
    assert [len(run) for run in runs] == [24, 2]


def test_like_lengths_share_one_run_when_a_run_costs_more_than_their_padding():
    sizes = [(1, n) for n in (17, 18, 20, 23, 24)]
    assert group(sizes, 128, 32, 2048) == [[0, 1, 2, 3, 4]]
    assert group(sizes, 128, 32, 2048, run_cost=0) == [[0], [1], [2], [3], [4]]  # free runs: no padding at all


def test_the_padded_share_of_a_mixed_round_is_small():
    random.seed(5)
    sizes = [(1, random.randint(6, 55)) for _ in range(32)]
    runs = group(sizes, 128, 32, 2048)
    real = sum(n for _, n in sizes)
    padded = sum(slots(run, sizes) for run in runs)
    one_run = 32 * bucket(max(n for _, n in sizes), 128)
    assert (padded - real) / padded < 0.2 < (one_run - real) / one_run


def test_the_batcher_runs_what_queued_behind_a_busy_model_by_length():
    """While the model is busy, short and long texts queue up in mixed order; the next
    round runs the short ones together and the long ones apart, each request getting its
    own answer back."""
    import asyncio

    import numpy as np
    from conftest import wait_until_async
    from fakes import FakeBackend

    from service.batching import Batcher, Limits
    from service.metrics import Metrics
    from variant.tokenization import Row

    def row(length: int, first: int) -> Row:
        return Row(np.array([first] + [1] * (length - 1), dtype=np.int64), np.zeros(length, dtype=np.int64))

    async def scenario():
        backend = FakeBackend()
        batcher = Batcher("m", backend, 0, 128, Limits(), Metrics())
        batcher.start()
        backend.gate.clear()
        blocker = asyncio.ensure_future(batcher.submit([row(5, 1)]))
        await wait_until_async(backend.running.is_set, "the first run to start")
        lengths = [6, 100, 7, 6, 99, 8, 7, 6]
        waiting = [asyncio.ensure_future(batcher.submit([row(n, i + 10)])) for i, n in enumerate(lengths)]
        await wait_until_async(lambda: batcher.load() * batcher.limits.max_queue == len(lengths), "all to queue")
        backend.gate.set()
        results = await asyncio.gather(blocker, *waiting)
        await batcher.stop()
        return backend.shapes, lengths, results[1:]

    shapes, lengths, results = asyncio.run(scenario())
    assert shapes == [(1, 5), (6, bucket(8, 128)), (2, bucket(100, 128))]
    for i, (n, result) in enumerate(zip(lengths, results)):
        assert result.logits[0, :2].tolist() == [i + 10 + n - 1, n]  # its own row: [sum of ids, real tokens]
