"""Texts → padded numpy batches, with the `tokenizers` library only (no transformers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from service.errors import PayloadTooLarge

# One text, or a (text, text_pair) for pair tasks such as paraphrase detection.
TextInput = str | tuple[str, str]


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
            raise PayloadTooLarge(f"inputs[{too_long[0]}] is longer than {limit} tokens and truncate is false")
    rows = []
    for e in encodings:  # the tokenizer pads to the longest of the call; padding goes right
        length = sum(e.attention_mask)
        rows.append(Row(np.array(e.ids[:length], dtype=np.int64), np.array(e.type_ids[:length], dtype=np.int64)))
    return rows


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
