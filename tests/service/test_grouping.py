"""service/grouping.py: queued jobs cut into runs of like lengths within a run's limits."""

import random

from service.grouping import RUN_COST_TOKENS, group
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
    # each row alone would cost RUN_COST_TOKENS more per run than the padding it saves
    assert 5 * bucket(24, 128) + RUN_COST_TOKENS < sum(n for _, n in sizes) + 5 * RUN_COST_TOKENS


def test_the_padded_share_of_a_mixed_round_is_small():
    random.seed(5)
    sizes = [(1, random.randint(6, 55)) for _ in range(32)]
    runs = group(sizes, 128, 32, 2048)
    real = sum(n for _, n in sizes)
    padded = sum(slots(run, sizes) for run in runs)
    one_run = 32 * bucket(max(n for _, n in sizes), 128)
    assert (padded - real) / padded < 0.2 < (one_run - real) / one_run
