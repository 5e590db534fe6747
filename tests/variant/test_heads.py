"""variant/heads.py on numbers: how each task's logits are read, one test per column of
the table (a row's activation, decision, agreement, difference, v2 outputs, labelled
metric, truth, relevance column and its probability, several labels per cell), and the
rules built on them. Served on fake variants: tests/service/test_tasks.py; exported from
tiny checkpoints: tests/compressor/test_task_heads.py."""

from __future__ import annotations

import numpy as np
import pytest

from variant import heads
from variant.manifest import Manifest

TASKS = ("single_label", "multi_label", "regression")
LOGITS = np.array([[2.0, -1.0, 0.0], [-0.5, 0.5, 3.0]])


def test_the_table_has_one_row_per_task_and_a_problem_type_for_each():
    assert tuple(heads.HEADS) == TASKS
    assert set(heads.PROBLEM_TYPES.values()) == set(TASKS)


def test_task_comes_from_problem_type_then_from_the_label_count():
    assert heads.task_of("multi_label_classification", 3) == "multi_label"
    assert heads.task_of("regression", 1) == "regression"
    assert heads.task_of(None, 1) == "regression"
    assert heads.task_of(None, 2) == "single_label"
    assert heads.task_of("single_label_classification", 2) == "single_label"
    assert heads.task_of("something_else", 3) == "single_label"  # an unknown problem_type: the count decides


def test_activate_per_task():
    single = heads.activate("single_label", LOGITS)
    assert single.sum(axis=1) == pytest.approx([1.0, 1.0]) and (single.argmax(1) == LOGITS.argmax(1)).all()
    assert heads.activate("multi_label", LOGITS) == pytest.approx(1 / (1 + np.exp(-LOGITS)))
    assert heads.activate("regression", LOGITS[:, :1]) == pytest.approx(LOGITS[:, :1])
    # No overflow for logits far from 0.
    assert heads.activate("multi_label", np.array([[1000.0, -1000.0]])) == pytest.approx(np.array([[1.0, 0.0]]))
    assert heads.activate("single_label", np.array([[1000.0, -1000.0]])) == pytest.approx(np.array([[1.0, 0.0]]))


def test_decide_per_task():
    scores = np.array([[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]])
    assert heads.decisions("single_label", scores).tolist() == [1, 0]  # the top-1 index
    assert heads.decisions("multi_label", scores).tolist() == [[False, True, False], [True, False, False]]  # ≥ 0.5
    assert heads.decisions("multi_label", scores, threshold=0.25).tolist() == [[False, True, True], [True, False, False]]
    assert heads.decisions("regression", scores[:, :1]).tolist() == [0.2, 0.7]  # the score itself


def test_agreement_is_per_input_except_for_regression():
    a = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    b = np.array([[0.8, 0.2], [0.6, 0.4], [0.6, 0.4]])
    assert heads.row_agreement("single_label", a, b).tolist() == [1.0, 0.0, 1.0]
    # multi_label: the share of labels decided alike, per input.
    assert heads.row_agreement("multi_label", a, b).tolist() == [1.0, 0.0, 1.0]
    assert heads.row_agreement("multi_label", a, b, threshold=0.65).tolist() == [1.0, 1.0, 0.5]
    assert heads.row_agreement("regression", a[:, :1], b[:, :1]) is None
    assert [heads.HEADS[t].agrees_per_input for t in TASKS] == [True, True, False]


def test_agreement_per_task():
    a = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    b = np.array([[0.8, 0.2], [0.6, 0.4], [0.6, 0.4]])
    assert heads.agreement("single_label", a, b) == {"agreement": pytest.approx(2 / 3)}
    # multi_label: 6 decisions at 0.5; rows 0 and 2 agree on both labels, row 1 on neither.
    assert heads.agreement("multi_label", a, b) == {"agreement": pytest.approx(4 / 6)}
    assert heads.agreement("multi_label", a, b, threshold=0.65)["agreement"] == pytest.approx(5 / 6)
    x = np.array([[1.0], [2.0], [3.0]])
    figures = heads.agreement("regression", x * 2 + 1, x)
    assert figures["agreement"] == pytest.approx(1.0) and figures["mae"] == pytest.approx(3.0)
    assert heads.agreement("regression", -x, x)["agreement"] == pytest.approx(-1.0)


def test_correlation_of_constant_scores():
    assert heads.correlation(np.ones(3), np.ones(3)) == 1.0
    assert heads.correlation(np.ones(3), np.array([1.0, 2.0, 3.0])) == 0.0


def test_difference_per_task():
    scores = np.array([[0.7, 0.2, 0.6], [0.1, 0.5, 0.4]])
    reference = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.4]])
    # single_label: |Δ| of the variant's top-1 probability only (labels 0 and 1).
    assert heads.score_difference("single_label", scores, reference) == pytest.approx([0.1, 0.3])
    # multi_label and regression: the largest |Δ| over the labels (label 2, then label 1).
    assert heads.score_difference("multi_label", scores, reference) == pytest.approx([0.5, 0.3])
    assert heads.score_difference("regression", scores[:, :1], reference[:, :1]) == pytest.approx([0.1, 0.1])


def test_v2_outputs_per_task():
    assert {t: heads.HEADS[t].outputs for t in TASKS} == {
        "single_label": ("logits", "probabilities"), "multi_label": ("logits", "probabilities"),
        "regression": ("logits", "scores")}


def test_labelled_metric_and_truth_per_task():
    assert [heads.HEADS[t].metric for t in TASKS] == ["accuracy", "accuracy", "pearson"]
    scores = np.array([[0.8, 0.6], [0.3, 0.9], [0.6, 0.2]])
    # single_label: a cell's first label is the truth; the top-1 of rows 0 and 1 is right.
    assert heads.labelled_score("single_label", scores, [[0], [1], [1]]) == pytest.approx(2 / 3)
    # multi_label: every label listed is on, the others off: 5 of 6 decisions right.
    assert heads.labelled_score("multi_label", scores, [[0, 1], [1], [0, 1]]) == pytest.approx(5 / 6)
    # regression: no truth table, the correlation of the scores with the numbers.
    assert heads.HEADS["regression"].truth is None
    assert heads.labelled_score("regression", scores[:, :1], [1.6, 0.6, 1.2]) == pytest.approx(1.0)


def test_hits_are_what_the_labelled_score_averages_one_input_at_a_time_too():
    scores = np.array([[0.8, 0.6], [0.3, 0.9], [0.6, 0.2]])
    for task, cells, expected in [("single_label", [[0], [1], [1]], [True, True, False]),
                                  ("multi_label", [[0, 1], [1], [0, 1]], [[True, True], [True, True], [True, False]])]:
        decided = heads.decisions(task, scores)
        assert heads.hits(task, decided, cells, 2).tolist() == expected
        assert heads.hits(task, decided, cells, 2).mean() == heads.labelled_score(task, scores, cells)
        # Live feedback judges an input by itself: the same hits as among the others.
        assert [heads.hits(task, decided[i:i + 1], cells[i:i + 1], 2)[0].tolist() for i in range(3)] == expected


def test_several_labels_per_data_cell_only_for_multi_label():
    assert [heads.HEADS[t].many_labels for t in TASKS] == [False, True, False]


def test_relevance_column_per_head():
    assert heads.relevance("regression", 1) == 0
    assert heads.relevance("multi_label", 1) == 0
    assert heads.relevance("single_label", 2) == 1  # the positive class of two
    assert heads.relevance("single_label", 3) is None
    assert heads.relevance("multi_label", 3) is None


def test_relevance_probability_per_head():
    logits = np.array([[0.0, 2.0], [1.0, -1.0]])
    for task in ("single_label", "multi_label"):  # their scores are probabilities already
        scores = heads.activate(task, logits)
        assert heads.relevance_scores(task, logits, scores, 1, raw=False) == pytest.approx(scores[:, 1])
        assert heads.relevance_scores(task, logits, scores, 1, raw=True) == pytest.approx(logits[:, 1])
    # A regression score is a logit for ranking: through a sigmoid unless raw.
    scores = heads.activate("regression", logits[:, :1])
    assert heads.relevance_scores("regression", logits, scores, 0, raw=False) == pytest.approx([0.5, 1 / (1 + np.e ** -1)])
    assert heads.relevance_scores("regression", logits, scores, 0, raw=True) == pytest.approx([0.0, 1.0])


def test_heads_compare_only_with_the_same_task_and_labels():
    tags = ("multi_label", ("plot", "acting"))
    assert heads.comparable("a", tags, "b", ("multi_label", ["plot", "acting"])) is None
    other_labels = heads.comparable("a", tags, "b", ("multi_label", ("plot", "music")))
    assert other_labels == ("'a' (multi_label, 2 labels) cannot be compared with the reference 'b' "
                            "(multi_label, 2 labels)")
    assert "'a' (multi_label, 2 labels)" in heads.comparable("a", tags, "b", ("single_label", ("plot", "acting")))


def test_old_manifests_read_their_task_by_transformers_rule():
    old = {"name": "x", "base_model": "y", "task": "text-classification", "max_length": 8, "method": "none",
           "parameters": 1, "parameters_original": 1, "onnx_bytes": 1}
    assert Manifest.model_validate({**old, "labels": ["a", "b"]}).task == "single_label"
    assert Manifest.model_validate({**old, "labels": ["score"]}).task == "regression"
