"""variant/measure.py measures what the service runs: the padded shapes it times are the
shapes service/batching.py's Batcher runs for the same texts, alone, as 8 and as 32 of
mixed lengths; its answers are the head's scores in the inputs' order. On a fake variant
(tests/fakes.py), so no graph is needed."""

import asyncio
import threading

import numpy as np
import pytest
from conftest import CORPUS, fake_variant
from fakes import FakeBackend, fake_logits

from service.batching import Batcher, Limits
from service.metrics import Metrics
from variant import heads, measure
from variant.folder import open_folder
from variant.tokenization import pad_id, tokenize

WORDS = " ".join(CORPUS[:6]).split()
# 32 texts of 1 to 45 words, in no order: their rows pad to several buckets.
MIXED = [" ".join(WORDS[:(i * 17) % 45 + 1]) for i in range(32)]
LIMITS = [(32, 2048), (8, 256)]  # the defaults, and limits that cut 32 texts into several runs


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    folder = fake_variant(tmp_path_factory.mktemp("measure") / "fake", answers="spread", max_length=64)
    return open_folder(folder, FakeBackend)


def batcher_runs(opened, texts, max_batch_size, max_batch_tokens):
    """The shapes the service's batcher runs for `texts` in one request, and its logits."""
    async def serve():
        backend = FakeBackend(opened.folder / "model.onnx")
        batcher = Batcher("m", backend, pad_id(opened.tokenizer), opened.manifest.max_length,
                          Limits(max_batch_size, max_batch_tokens), Metrics())
        batcher.start()
        result = await batcher.submit(tokenize(opened.tokenizer, texts))
        await batcher.stop()
        return backend.shapes, result.logits

    return asyncio.run(serve())


@pytest.mark.parametrize("size, tokens", LIMITS)
@pytest.mark.parametrize("texts", [MIXED[:1], MIXED[5:6], MIXED[:8], MIXED], ids=["alone", "alone-long", "8", "32"])
def test_measured_shapes_are_the_shapes_the_batcher_runs(opened, texts, size, tokens):
    shapes, logits = batcher_runs(opened, texts, size, tokens)
    measured = measure.arrays_as_served(opened, texts, size, tokens)
    assert [a["input_ids"].shape for a in measured] == shapes
    assert np.concatenate([opened.backend.run(a) for a in measured]) == pytest.approx(logits)


def test_the_mixed_texts_need_padding_and_several_runs(opened):
    # What makes the comparison above worth making.
    lengths = {len(r.ids) for r in tokenize(opened.tokenizer, MIXED)}
    assert len(lengths) > 8 and max(lengths) <= opened.manifest.max_length
    assert len(measure.arrays_as_served(opened, MIXED, *LIMITS[1])) > 2


def test_answers_are_the_heads_scores_in_the_inputs_order(opened):
    expected = heads.activate("single_label", fake_logits(opened.folder, MIXED).astype(np.float64))
    # Run 5 at a time, sorted by length: the answers still come back in the order asked.
    assert measure.answers(opened, MIXED, batch=5) == pytest.approx(expected)


def test_groups_take_the_inputs_in_turn_and_wrap_around():
    assert measure.groups(["a", "b", "c"], 2, 3) == [["a", "b"], ["c", "a"], ["b", "c"]]


def test_percentiles():
    times = [float(t) for t in range(1, 101)]
    assert measure.percentiles(times) == {"p50": 50.5, "p95": pytest.approx(95.95)}
    assert measure.percentiles([3.0]) == {"p50": 3.0, "p95": 3.0}


def test_warm_set_has_one_batch_per_distinct_shape(opened):
    batches = [MIXED[:1], MIXED[:1], MIXED[1:2], MIXED[:8], MIXED[:8]]
    warm = measure.warm_set(opened, batches)
    shapes = [tuple(a["input_ids"].shape for a in measure.arrays_as_served(opened, b)) for b in warm]
    assert len(set(shapes)) == len(shapes) == len({tuple(a["input_ids"].shape for a in measure.arrays_as_served(
        opened, b)) for b in batches})


def test_latency_times_each_size_after_warming_every_shape(opened):
    backend = opened.backend
    before = len(backend.shapes)
    timed = measure.latency(opened, MIXED, sizes=(1, 8), runs={1: 4, 8: 2})
    assert set(timed) == {1, 8} and all(0 < t["p50"] <= t["p95"] for t in timed.values())
    ran = backend.shapes[before:]
    warm = len(measure.warm_set(opened, measure.groups(MIXED, 1, 4))) + len(
        measure.warm_set(opened, measure.groups(MIXED, 8, 2)))
    assert len(ran) == warm + 4 + 2  # one warm-up run per distinct shape, then the timed runs


@pytest.mark.parametrize("parallel", [1, 2])
def test_throughput_runs_the_requests_side_by_side_as_the_backend_allows(tmp_path, parallel):
    opened = open_folder(fake_variant(tmp_path / "fake", answers="spread", max_length=64), FakeBackend)
    opened.backend.parallel = parallel
    if parallel > 1:  # every run waits for a second one to start beside it: only side by side do they finish
        meet = threading.Barrier(parallel, timeout=30)
        run = opened.backend.run
        opened.backend.run = lambda arrays: (meet.wait(), run(arrays))[1]
    warm = len(measure.warm_set(opened, measure.groups(MIXED, 8, 4)))
    before = len(opened.backend.shapes)
    per_request = measure.throughput(opened, MIXED, 8, 4)
    assert per_request > 0
    assert len(opened.backend.shapes) - before == warm * parallel + 4  # each shape warmed per stream, then timed
