"""Texts → rows → padded numpy batches, with the `tokenizers` library only (no transformers).

The pad rule the service batches by lives here, so the compressor measures the shapes the
service runs: a batch of one row is not padded at all; a batch of several rows pads to
the next length bucket of its longest row. The buckets are 8 tokens apart up to 128,
where most sentences fall: on a CPU every padded token is paid for, and the service
groups queued texts of like lengths into a run (service/grouping.py), so a finer step
saves padding; a runtime that plans per shape still sees a bounded set of shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

# One text, or a (text, text_pair) for pair tasks such as paraphrase detection.
TextInput = str | tuple[str, str]


LENGTH_BUCKETS = (*range(8, 129, 8), 160, 192, 256, 320, 384, 448, 512)
# The service's defaults for one run (SLIMSERVE_MAX_BATCH_SIZE, SLIMSERVE_MAX_BATCH_TOKENS).
MAX_BATCH_SIZE = 32
MAX_BATCH_TOKENS = 2048


class InputTooLong(ValueError):
    """An input over the variant's max_length where truncation was refused."""


@dataclass(frozen=True)
class Batch:
    arrays: dict[str, np.ndarray]  # input_ids, attention_mask, token_type_ids: int64 [batch, seq]
    tokens: int  # real (unpadded) tokens in the batch


@dataclass(frozen=True)
class Row:
    """One tokenized input, unpadded, so the batcher can pad it together with others."""

    ids: np.ndarray  # int64 [length]
    type_ids: np.ndarray  # int64 [length]


def pad_id(tokenizer: Tokenizer) -> int:
    return int(tokenizer.padding["pad_id"]) if tokenizer.padding else 0


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length)
    # The compressor stores the checkpoint's own padding in tokenizer.json; a hand-made
    # file may lack it, so fall back to the usual BERT or RoBERTa pad token.
    # Padding always goes to the longest input of the batch, never to a fixed length.
    if tokenizer.padding is not None:
        pad_token = tokenizer.padding["pad_token"]
    else:
        pad_token = next((t for t in ("[PAD]", "<pad>") if tokenizer.token_to_id(t) is not None), None)
        if pad_token is None:
            raise ValueError(f"{path.name} sets no padding and has neither [PAD] nor <pad>")
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad_token), pad_token=pad_token)
    return tokenizer


def tokenize(tokenizer: Tokenizer, inputs: list[TextInput], truncate: bool = True) -> list[Row]:
    """Tokenize without padding; refuse over-long inputs unless `truncate`."""
    encodings = tokenizer.encode_batch(inputs)
    if not truncate:
        too_long = [i for i, e in enumerate(encodings) if e.overflowing]
        if too_long:
            limit = tokenizer.truncation["max_length"] if tokenizer.truncation else "the limit"
            raise InputTooLong(f"inputs[{too_long[0]}] is longer than {limit} tokens and truncate is false")
    rows = []
    for e in encodings:  # the tokenizer pads to the longest of the call; padding goes right
        length = sum(e.attention_mask)
        rows.append(Row(np.array(e.ids[:length], dtype=np.int64), np.array(e.type_ids[:length], dtype=np.int64)))
    return rows


def bucket(length: int, max_length: int) -> int:
    """The padded length for a batch of several rows whose longest row is `length`."""
    fits = next((b for b in LENGTH_BUCKETS if length <= b <= max_length), max_length)
    return fits if length <= fits else max(length, 1)  # over max_length: only a refused input is, truncation off


def buckets(max_length: int) -> list[int]:
    return sorted({b for b in LENGTH_BUCKETS if b < max_length} | {max_length})


def padded_length(rows: list[Row], max_length: int) -> int:
    """The service's pad rule: a lone row as it is, several to their longest row's bucket."""
    longest = max(len(r.ids) for r in rows)
    return longest if len(rows) == 1 else bucket(longest, max_length)


def chunks(rows: list[Row], max_length: int, max_batch_size: int = MAX_BATCH_SIZE,
           max_batch_tokens: int = MAX_BATCH_TOKENS) -> list[list[Row]]:
    """`rows` in pieces no larger than one run may hold: at most `max_batch_size` rows and
    `max_batch_tokens` padded tokens (a single row over the token budget runs alone)."""
    size = max(1, min(max_batch_size, max_batch_tokens // bucket(max(len(r.ids) for r in rows), max_length)))
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def warmup_shapes(max_length: int, max_batch_size: int = MAX_BATCH_SIZE,
                  max_batch_tokens: int = MAX_BATCH_TOKENS) -> list[tuple[int, int]]:
    """(batch, length) for every length bucket: one row, and as many as a batch may hold."""
    grid = []
    for length in buckets(max_length):
        largest = max(1, min(max_batch_size, max_batch_tokens // length))
        grid += sorted({(1, length), (largest, length)})
    return grid


def pad(rows: list[Row], length: int, pad_token: int) -> Batch:
    """Rows padded on the right to `length` (at least the longest row)."""
    ids = np.full((len(rows), length), pad_token, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    types = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        n = len(row.ids)
        ids[i, :n], mask[i, :n], types[i, :n] = row.ids, 1, row.type_ids
    return Batch({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, int(mask.sum()))


def encode(tokenizer: Tokenizer, inputs: list[TextInput], truncate: bool = True) -> Batch:
    """Tokenize and pad to the longest input; refuse over-long inputs unless `truncate`."""
    rows = tokenize(tokenizer, inputs, truncate)
    return pad(rows, max((len(r.ids) for r in rows), default=0), pad_id(tokenizer))
