"""Pair calibration: a pair task's calibration rows reach every calibration-using method
as pairs (second segment, token_type_ids of 1), exactly as the service encodes them."""

from __future__ import annotations

import itertools

import pytest
from conftest import CORPUS

from compressor.data import PARITY_SENTENCES, parity_inputs, read_calibration
from compressor.errors import InputError

PAIRS = list(itertools.pairwise(CORPUS[:7])) * 3


def write_pairs(path, rows=PAIRS):
    path.write_text("first\tsecond\tlabel\n" + "".join(f"{a}\t{b}\t0\n" for a, b in rows), encoding="utf-8")
    return path


def test_a_tsv_with_a_pair_column_gives_pairs(tmp_path):
    path = write_pairs(tmp_path / "pairs.tsv")
    assert read_calibration(path, "first", "second") == PAIRS
    assert read_calibration(path, "first") == [a for a, _ in PAIRS]


def test_rows_with_an_empty_segment_are_left_out(tmp_path):
    path = write_pairs(tmp_path / "pairs.tsv", [("a b", "c d"), ("e f", ""), ("", "g")])
    assert read_calibration(path, "first", "second") == [("a b", "c d")]


@pytest.mark.parametrize(("name", "text", "pair", "message"), [
    ("texts.txt", None, "second", "--text-pair-col needs a .tsv calibration file"),
    ("pairs.tsv", "first", "third", "has no column 'third'"),
])
def test_bad_pair_columns_are_input_errors(tmp_path, name, text, pair, message):
    path = tmp_path / name
    write_pairs(path)
    with pytest.raises(InputError, match=message):
        read_calibration(path, text, pair)


def test_parity_runs_pairs_for_a_pair_task():
    assert parity_inputs(None) == PARITY_SENTENCES
    checked = parity_inputs(PAIRS)
    assert all(isinstance(x, tuple) for x in checked)
    assert len(checked) == len(PARITY_SENTENCES) + min(32, len(PAIRS))


def second_segment_seen(model) -> list[bool]:
    """Record, per forward pass, whether any token_type_id was 1."""
    seen: list[bool] = []

    def hook(_module, args, kwargs):
        types = kwargs.get("token_type_ids")
        seen.append(bool(types is not None and (types == 1).any()))

    model.bert.embeddings.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.parametrize(("method", "ratio"), [("svd-aware", 0.5), ("asvd", 0.5), ("fwsvd", 0.5), ("prune", 0.5),
                                               ("drop-layers", 0.5)])
def test_every_calibrated_method_sees_the_second_segment(checkpoints, method, ratio):
    from compressor.checkpoint import load_classifier
    from compressor.pipeline import Recipe, apply_methods

    classifier = load_classifier(str(checkpoints["bert"]))
    seen = second_segment_seen(classifier.model)  # deepcopy in apply_methods keeps the hook
    apply_methods(classifier, Recipe("x", method, ratio), PAIRS)
    assert seen and all(seen), f"{method}: {seen.count(False)} of {len(seen)} passes without a second segment"


def test_embed_ae_weights_the_second_segments_tokens(checkpoints):
    from compressor.checkpoint import load_classifier
    from compressor.methods.embedding import token_weights

    classifier = load_classifier(str(checkpoints["bert"]))
    vocab = classifier.model.config.vocab_size
    pairs = [("charming journey", "stocks rallied")] * 4
    only_first = token_weights(classifier, [a for a, _ in pairs], vocab)
    both = token_weights(classifier, pairs, vocab)
    second = classifier.tokenizer("stocks rallied", add_special_tokens=False)["input_ids"]
    assert (both[second] > only_first[second]).all()


def test_static_int8_calibrates_on_pairs(checkpoints, tmp_path, monkeypatch):
    from compressor import export
    from compressor.pipeline import Recipe, compress

    calibrated = []
    real = export.calibration_feeds

    def spy(*args, **kwargs):
        feeds = real(*args, **kwargs)
        calibrated.extend(bool((f["token_type_ids"] == 1).any()) for f in feeds)
        return feeds

    monkeypatch.setattr(export, "calibration_feeds", spy)
    compress(str(checkpoints["bert"]), Recipe("static", quantize="int8-static"), tmp_path, PAIRS)
    assert calibrated and all(calibrated)


def test_the_command_line_takes_pair_columns(checkpoints, tmp_path, capsys):
    from compressor.cli import main

    path = write_pairs(tmp_path / "pairs.tsv")
    main(["compress", str(checkpoints["bert"]), "--method", "svd-aware", "--ratio", "0.5", "--calibration", str(path),
          "--text-col", "first", "--text-pair-col", "second", "--name", "pairs", "--out", str(tmp_path / "models")])
    assert "parity" in capsys.readouterr().out
    assert (tmp_path / "models" / "pairs" / "model.onnx").is_file()
