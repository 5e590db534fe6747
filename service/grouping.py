"""Which queued jobs run together: runs of like lengths, so few token slots are padding.

The batcher hands over what waits (a round: at most a few batches' worth, oldest first);
this cuts it into runs. Jobs are ordered by their longest row and the order is split
where it costs least: a run costs its token slots (rows × the padded length the pad rule
gives it, variant/tokenization.py) plus a fixed `run_cost` in token slots for starting a
run at all, so a few long texts do not make many short ones pad to their length, and
like lengths still share a run. A dynamic program over the ordered jobs finds the
cheapest split within the limits of one run (rows, padded tokens). Every job of a round
runs in that round, so no job waits behind more than one round, however long it is.
"""

from __future__ import annotations

from variant.tokenization import bucket

# What starting a run costs, in token slots: the fixed part of a run (a session call,
# a thread hop, per-operator work) over the cost of one more token (docs/benchmarks.md,
# batching).
RUN_COST_TOKENS = 16


def group(sizes: list[tuple[int, int]], max_length: int, max_rows: int, max_tokens: int,
          run_cost: int = RUN_COST_TOKENS) -> list[list[int]]:
    """`sizes` holds (rows, longest row) per job; the answer is the jobs' indices cut into
    runs, shortest run first. A job is never split (the batcher already cut each request
    to fit one run), and a run holds at most `max_rows` rows and `max_tokens` padded
    tokens, except a job that exceeds them alone."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i][1])
    rows_of = [sizes[i][0] for i in order]
    longest = [sizes[i][1] for i in order]
    padded = [bucket(n, max_length) for n in longest]  # what a run ending at that job pads to
    cost = [0] + [0] * len(order)
    start = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        best, rows = None, 0
        for first in range(end - 1, -1, -1):  # the run order[first:end], padded for order[end - 1]
            rows += rows_of[first]
            slots = rows * (longest[end - 1] if rows == 1 else padded[end - 1])
            if first < end - 1 and (rows > max_rows or slots > max_tokens):
                break
            total = cost[first] + slots + run_cost
            if best is None or total < best:
                best, start[end] = total, first
        cost[end] = best
    runs, end = [], len(order)
    while end > 0:
        runs.append(order[start[end]:end])
        end = start[end]
    return runs[::-1]
