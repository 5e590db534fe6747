"""variant/cascade.py: the spec and its file, whether two variants can form a cascade, and
the rule: the inputs the fast variant is unsure of, and its answers merged with the
reference's. Served: tests/service/test_features.py."""

import json

import numpy as np
import pytest
from pydantic import ValidationError

from variant.cascade import (
    CASCADE_FILE,
    CascadeSpec,
    merge,
    read_cascade_file,
    unfit,
    unsure,
)

PROBABILITIES = np.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7], [0.5, 0.5]])
BINARY = ("single_label", ("negative", "positive"))


def test_unsure_rows_are_those_whose_top_probability_is_under_the_threshold():
    assert unsure(PROBABILITIES, 0.6).tolist() == [1, 3]
    assert unsure(PROBABILITIES, 0.7).tolist() == [1, 3]  # at the threshold is sure
    assert unsure(PROBABILITIES, 0.0).tolist() == []
    assert unsure(PROBABILITIES, 1.0).tolist() == [0, 1, 2, 3]


def test_merge_replaces_the_unsure_rows_in_order_and_leaves_the_fast_answers_alone():
    fast = np.arange(8.0).reshape(4, 2)
    merged = merge(fast, np.array([1, 3]), np.array([[-1.0, -2.0], [-3.0, -4.0]]))
    assert merged.tolist() == [[0, 1], [-1, -2], [4, 5], [-3, -4]]
    assert fast.tolist() == np.arange(8.0).reshape(4, 2).tolist()
    assert merge(fast, np.array([], dtype=int), np.empty((0, 2))).tolist() == fast.tolist()


def test_two_single_label_variants_with_the_same_labels_form_a_cascade():
    spec = CascadeSpec(fast="f", reference="r", threshold=0.9)
    assert unfit("c", spec, {"f": BINARY, "r": BINARY}) is None


@pytest.mark.parametrize("fast, reference, reason", [
    (("single_label", ("a", "b")), BINARY, "cascade 'c': 'f' (single_label, 2 labels) cannot be compared"),
    (("single_label", ("a", "b", "c")), BINARY, "cannot be compared"),
    (("multi_label", ("a", "b")), ("multi_label", ("a", "b")), "cascades need single_label variants, not multi_label"),
    (("regression", ("s",)), ("regression", ("s",)), "cascade 'c': cascades need single_label variants, not regression"),
])
def test_what_cannot_form_a_cascade_says_why(fast, reference, reason):
    spec = CascadeSpec(fast="f", reference="r", threshold=0.9)
    assert reason in unfit("c", spec, {"f": fast, "r": reference})


def test_the_cascade_file_is_read_beside_the_variants(tmp_path):
    assert read_cascade_file(tmp_path) == {}  # no file: no cascades
    (tmp_path / CASCADE_FILE).write_text(json.dumps({"c": {"fast": "f", "reference": "r", "threshold": 0.8}}))
    assert read_cascade_file(tmp_path) == {"c": CascadeSpec(fast="f", reference="r", threshold=0.8)}


@pytest.mark.parametrize("spec", [
    {"fast": "f", "reference": "r", "threshold": 1.5},
    {"fast": "f", "reference": "r"},
    {"fast": "f", "reference": "r", "threshold": 0.5, "extra": 1},
])
def test_a_bad_cascade_file_raises(tmp_path, spec):
    (tmp_path / CASCADE_FILE).write_text(json.dumps({"c": spec}))
    with pytest.raises(ValidationError):
        read_cascade_file(tmp_path)
    (tmp_path / CASCADE_FILE).write_text("{not json")
    with pytest.raises(ValueError):
        read_cascade_file(tmp_path)
