"""variant/tokenization.py: the pad and bucket rules the service batches by and the
compressor measures by, and texts → rows → padded arrays."""

import itertools

import numpy as np
import pytest
from conftest import fixed_wordpiece_json
from tokenizers import Tokenizer

from variant.tokenization import (
    LENGTH_BUCKETS,
    InputTooLong,
    Row,
    bucket,
    buckets,
    chunks,
    encode,
    load_tokenizer,
    pad,
    pad_id,
    padded_length,
    tokenize,
    warmup_shapes,
)


def rows(*lengths: int) -> list[Row]:
    return [Row(np.arange(1, n + 1, dtype=np.int64), np.zeros(n, dtype=np.int64)) for n in lengths]


@pytest.fixture
def tokenizer(tmp_path):
    (tmp_path / "tokenizer.json").write_text(fixed_wordpiece_json())
    return load_tokenizer(tmp_path / "tokenizer.json", max_length=16)


def test_bucket_is_the_next_length_bucket_up_to_max_length():
    for smaller, larger in itertools.pairwise(LENGTH_BUCKETS):
        assert bucket(smaller, 512) == smaller and bucket(smaller + 1, 512) == larger
    assert bucket(0, 128) == bucket(1, 128) == LENGTH_BUCKETS[0]
    assert 100 not in LENGTH_BUCKETS and bucket(100, 100) == bucket(99, 100) == 100  # max_length is the last bucket
    assert bucket(600, 1024) == 1024  # past the last length bucket: max_length, a shape the warm-up ran
    assert all(bucket(n, m) in buckets(m) for m in (64, 100, 128, 1024) for n in range(1, m + 1))
    assert bucket(130, 128) == 130  # over max_length (truncation refused): the length itself


def test_buckets_end_at_max_length():
    assert buckets(100) == [*(b for b in LENGTH_BUCKETS if b < 100), 100]
    assert buckets(64) == [b for b in LENGTH_BUCKETS if b <= 64] and buckets(64)[-1] == 64
    assert buckets(512) == list(LENGTH_BUCKETS)


def test_padded_length_leaves_a_lone_row_alone_and_buckets_several():
    assert padded_length(rows(20), 128) == 20
    assert padded_length(rows(20, 3), 128) == bucket(20, 128) > 20
    assert padded_length(rows(3, 20), 128) == bucket(20, 128)  # the longest row decides, wherever it is


def test_chunks_hold_at_most_the_batch_size_and_the_token_budget():
    assert [len(c) for c in chunks(rows(*[10] * 70), 128)] == [32, 32, 6]  # the default size, 32
    assert [len(c) for c in chunks(rows(*[10] * 10), 128, max_batch_size=4)] == [4, 4, 2]
    # Room for two rows at the longest row's bucket.
    assert [len(c) for c in chunks(rows(40, 3, 3, 3, 3), 128, max_batch_tokens=2 * bucket(40, 128))] == [2, 2, 1]
    assert [len(c) for c in chunks(rows(100, 1), 128, max_batch_tokens=16)] == [1, 1]  # over the budget: alone
    pieces = chunks(rows(*range(1, 11)), 128, max_batch_size=3)
    assert [len(r.ids) for piece in pieces for r in piece] == list(range(1, 11))  # in order, none lost


@pytest.mark.parametrize("max_length, size, tokens", [(64, 32, 2048), (128, 16, 512), (1024, 32, 256)])
def test_warmup_shapes_are_one_row_and_a_full_batch_per_bucket(max_length, size, tokens):
    shapes = warmup_shapes(max_length, size, tokens)
    assert [length for _, length in shapes] == sorted(length for _, length in shapes)
    for length in buckets(max_length):
        full = max(1, min(size, tokens // length))
        assert {batch for batch, at in shapes if at == length} == {1, full}
    assert all(batch == 1 or batch * length <= tokens for batch, length in shapes)


def test_pad_fills_on_the_right_and_counts_real_tokens():
    batch = pad(rows(2, 4), 6, pad_token=0)
    assert batch.arrays["input_ids"].tolist() == [[1, 2, 0, 0, 0, 0], [1, 2, 3, 4, 0, 0]]
    assert batch.arrays["attention_mask"].tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    assert batch.arrays["token_type_ids"].shape == (2, 6) and batch.tokens == 6
    assert all(a.dtype == np.int64 for a in batch.arrays.values())


def test_tokenize_truncates_or_refuses_what_is_over_max_length(tokenizer):
    long = " ".join(["charming"] * 40)
    assert [len(r.ids) for r in tokenize(tokenizer, ["film", long])] == [3, 16]  # [CLS] film [SEP]
    with pytest.raises(InputTooLong, match=r"inputs\[1\] is longer than 16 tokens"):
        tokenize(tokenizer, ["film", long], truncate=False)


def test_pairs_carry_their_token_types(tokenizer):
    [row] = tokenize(tokenizer, [("film", "the plot")])
    assert row.type_ids.tolist() == [0, 0, 0, 1, 1, 1]


def test_encode_pads_to_the_longest(tokenizer):
    texts = ["film", "the plot is thin"]  # 3 and 6 tokens
    assert encode(tokenizer, texts).arrays["input_ids"].shape == (2, 6)


def test_a_tokenizer_without_padding_pads_with_its_pad_token(tmp_path):
    tok = Tokenizer.from_str(fixed_wordpiece_json())
    assert tok.padding is None
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path / "tokenizer.json", 16)
    assert pad_id(loaded) == tok.token_to_id("[PAD]") and loaded.truncation["max_length"] == 16


def test_a_tokenizer_with_no_pad_token_is_refused(tmp_path):
    tok = Tokenizer.from_str(fixed_wordpiece_json().replace('"[PAD]"', '"[NOPE]"'))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="sets no padding and has neither"):
        load_tokenizer(tmp_path / "tokenizer.json", 16)
