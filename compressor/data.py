"""Reading text: labelled TSV files (GLUE style) and unlabeled calibration text."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compressor.errors import InputError

if TYPE_CHECKING:  # the command line reads data before it imports anything heavy
    from variant.tokenization import TextInput

# Real sentences for the export parity check: varied length, casing, punctuation and
# sentiment, so a broken graph cannot hide behind one easy input.
PARITY_SENTENCES = [
    "it's a charming and often affecting journey.",
    "The plot is thin, the acting wooden, and the two hours feel like four.",
    "A quietly devastating film that lingers long after the credits roll!",
    "I expected nothing and was still disappointed",
    "Stocks rallied on Tuesday after the central bank held interest rates steady.",
    "ok",
    "Is this the best they could do? Honestly, I don't know what to think about it anymore...",
    "An engrossing, funny and surprisingly tender portrait of a family falling apart and coming back together.",
]


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    pairs: list[str] | None  # second segment for pair tasks, else None
    labels: list[str] | None  # raw label cells; mapped to class ids by the caller

    def inputs(self) -> list[str | tuple[str, str]]:
        return list(self.texts) if self.pairs is None else list(zip(self.texts, self.pairs))


def parity_inputs(calibration: list[TextInput] | None) -> list[TextInput]:
    """What an export's parity is checked on: PARITY_SENTENCES and the first calibration
    inputs. For a pair task (pairs in the calibration) the sentences go in as pairs too,
    so the check runs the second segment (token_type_ids of 1) as the service will."""
    calibration = calibration or []
    if any(isinstance(x, tuple) for x in calibration):
        return [*zip(PARITY_SENTENCES, PARITY_SENTENCES[1:] + PARITY_SENTENCES[:1]), *calibration[:32]]
    return [*PARITY_SENTENCES, *calibration[:32]]


def read_tsv(path: Path, text_col: str | None = None, pair_col: str | None = None,
             label_col: str | None = None) -> Examples:
    """Read a GLUE-style TSV with a header. Defaults: `sentence` (else the first column)
    for text, `label` (else none) for labels."""
    if not path.is_file():
        raise InputError(f"data file {path} does not exist")
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if len(rows) < 2:
        raise InputError(f"{path} has no data rows under its header")
    header, body = rows[0], rows[1:]

    def column(name: str | None, fallback: str | None) -> int | None:
        wanted = name or fallback
        if wanted is None or (name is None and wanted not in header):
            return None
        if wanted not in header:
            raise InputError(f"{path} has no column {wanted!r} (columns: {', '.join(header)})")
        return header.index(wanted)

    text_i = column(text_col, "sentence")
    text_i = 0 if text_i is None else text_i
    pair_i = column(pair_col, None)
    label_i = column(label_col, "label")
    width = max(i for i in (text_i, pair_i, label_i) if i is not None) + 1
    short = next((n for n, row in enumerate(body, start=2) if len(row) < width), None)
    if short is not None:
        raise InputError(f"{path}:{short} has fewer than {width} columns")
    return Examples(
        texts=[row[text_i].strip() for row in body],
        pairs=None if pair_i is None else [row[pair_i].strip() for row in body],
        labels=None if label_i is None else [row[label_i].strip() for row in body],
    )


def label_ids(raw: list[str], labels: list[str]) -> list[int]:
    """Map label cells (class ids or label names from the model's id2label) to class ids."""
    by_name = {name.lower(): i for i, name in enumerate(labels)}
    ids = []
    for n, cell in enumerate(raw):
        if cell.lower() in by_name:
            ids.append(by_name[cell.lower()])
        elif cell.isdigit() and int(cell) < len(labels):
            ids.append(int(cell))
        else:
            raise InputError(f"label {cell!r} (row {n + 1}) is neither a class id nor one of {labels}")
    return ids


def read_calibration(path: Path, text_col: str | None = None, pair_col: str | None = None) -> list[TextInput]:
    """Unlabeled text: a TSV column (or two, for a pair task: `(text, text_pair)` tuples,
    which the methods tokenize as the model will see them) when the file is a .tsv, else
    one text per line."""
    if path.suffix == ".tsv":
        examples = read_tsv(path, text_col=text_col, pair_col=pair_col)
        texts = [x for x in examples.inputs() if all(x if isinstance(x, tuple) else (x,))]
    elif pair_col is not None:
        raise InputError(f"--text-pair-col needs a .tsv calibration file, not {path.name}")
    elif path.is_file():
        try:
            texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    else:
        raise InputError(f"calibration file {path} does not exist")
    texts = [t for t in texts if t]
    if not texts:
        raise InputError(f"calibration file {path} holds no text")
    return texts
