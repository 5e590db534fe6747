"""Accuracy from labels that arrive later: what the service answered, kept by request id
for a while, and each label a client sends back joined to it and scored.

Every model route answers under a request id (`request_id`: the client's `x-request-id`
when it is a sane one, else a fresh one) and files what each model answered under it
(`Feedback.remember`): the model's name as the client asked for it (a cascade's answers
count under the cascade), its task, labels and the decision for each input. A label
names one input by the request id and the input's index; `Feedback.score` finds the
decisions and judges them by the task's rule (variant/heads.py: `hits`, the rule
`compressor evaluate`'s accuracy averages), so live accuracy and offline accuracy are
the same figure on the same data.

Memory is bounded twice: at most `capacity` requests are kept (the oldest go first), and
a request older than `ttl` seconds keeps only its model names, so a late label is told
`expired` rather than `unknown_id` until that record too leaves the ring.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.inference import Outcome
from service.metrics import UNKNOWN_MODEL, Metrics
from variant import heads
from variant.heads import Task

REQUEST_ID = "x-request-id"
# A client's id is used as sent when it is short and plain (it is echoed in a header and
# shown in logs); anything else gets a fresh id.
SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
Status = Literal["correct", "wrong", "scored", "unknown_id", "expired", "bad_label"]
Label = str | list[str] | int | float


def request_id(sent: str | None) -> str:
    """The id a request answers under: the client's `x-request-id` when sane, else a uuid4."""
    return sent if sent is not None and SANE_ID.fullmatch(sent) else uuid.uuid4().hex


@dataclass(frozen=True)
class Answer:
    """What one model answered to one request."""

    model: str
    task: Task
    labels: list[str]
    decided: np.ndarray  # heads.decisions of the scores answered: [inputs] or [inputs, labels]


@dataclass(frozen=True)
class Judged:
    """One label joined to one model's answer (or to none: `model` None)."""

    id: str
    index: int
    model: str | None
    status: Status


@dataclass
class Tally:
    """One model's running totals since the service started."""

    right: int = 0  # decisions that matched the label
    decisions: int = 0
    error: float = 0.0  # sum of |score − label| (regression)
    scored: int = 0


@dataclass
class Filed:
    at: float  # the clock when answered
    answers: tuple[Answer, ...]


def label_ids(label: Label, labels: list[str], many: bool) -> list[int] | None:
    """A label's class ids for a head with `labels` (a name; a list of names where an input
    may have many), or None when it is not one."""
    if many:
        if not isinstance(label, list):
            return None
        names = label
    else:
        names = [label]
    if not all(isinstance(n, str) and n in labels for n in names):
        return None
    return sorted({labels.index(n) for n in names})


def number(label: Label) -> float | None:
    """A regression label as a finite number, or None when it is not one."""
    if not isinstance(label, int | float):
        return None
    try:
        value = float(label)
    except OverflowError:  # an integer no float holds
        return None
    return value if math.isfinite(value) else None


class Feedback:
    """The ring of recent answers and the per-model totals the feedback gauges show."""

    def __init__(self, capacity: int, ttl: float, metrics: Metrics, threshold: float = heads.THRESHOLD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.ttl, self.metrics, self.threshold, self.clock = capacity, ttl, metrics, threshold, clock
        self._answers: OrderedDict[str, Filed] = OrderedDict()  # oldest first
        self._expired: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # id → its models, oldest first
        self._tallies: dict[str, Tally] = {}

    def __len__(self) -> int:
        return len(self._answers)

    def remember(self, request: str, answers: Iterable[tuple[str, Outcome]]) -> None:
        """File what each named model answered under request id `request` (a later request
        under the same id replaces it)."""
        filed = tuple(Answer(name, o.task, o.labels, heads.decisions(o.task, o.scores, self.threshold))
                      for name, o in answers)
        self._expired.pop(request, None)
        self._answers.pop(request, None)
        self._answers[request] = Filed(self.clock(), filed)
        self._age()
        while len(self._answers) > self.capacity:
            self._answers.popitem(last=False)

    def _age(self) -> None:
        """Move the requests past the time-to-live out of the ring, keeping their model names."""
        now = self.clock()
        while self._answers:
            request, filed = next(iter(self._answers.items()))
            if now - filed.at <= self.ttl:
                break
            del self._answers[request]
            self._expired[request] = tuple(a.model for a in filed.answers)
            while len(self._expired) > self.capacity:
                self._expired.popitem(last=False)

    def score(self, items: Iterable[tuple[str, int, Label]]) -> list[list[Judged]]:
        """Each (request id, input index, label) joined to every answer filed for that
        input and judged: per item, one result per answer, or one with no model where
        no answer is known."""
        self._age()
        results = []
        for request, index, label in items:
            filed = self._answers.get(request)
            if filed is None:
                models = self._expired.get(request)
                statuses = [(UNKNOWN_MODEL, "unknown_id")] if models is None else [(m, "expired") for m in models]
            else:
                statuses = [(a.model, self._judge(a, index, label)) for a in filed.answers]
            for model, status in statuses:
                self.metrics.feedback.labels(model, status).inc()
            results.append([Judged(request, index, None if m == UNKNOWN_MODEL else m, s) for m, s in statuses])
        return results

    def _judge(self, answer: Answer, index: int, label: Label) -> Status:
        if index >= len(answer.decided):
            return "unknown_id"  # the request had no input at that index
        head = heads.HEADS[answer.task]
        row = answer.decided[index:index + 1]
        if head.truth is None:  # a number to come near, not labels to match
            value = number(label)
            if value is None:
                return "bad_label"
            tally = self._tallies.setdefault(answer.model, Tally())
            tally.error += abs(float(row[0]) - value)
            tally.scored += 1
            self.metrics.feedback_error.labels(answer.model).set(tally.error / tally.scored)
            return "scored"
        ids = label_ids(label, answer.labels, head.many_labels)
        if ids is None:
            return "bad_label"
        right = heads.hits(answer.task, row, [ids], len(answer.labels))
        tally = self._tallies.setdefault(answer.model, Tally())
        tally.right += int(right.sum())
        tally.decisions += right.size
        self.metrics.feedback_accuracy.labels(answer.model).set(tally.right / tally.decisions)
        return "correct" if right.all() else "wrong"
