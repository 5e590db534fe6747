"""Cascades: a virtual model that answers with a fast variant and hands the inputs it is
unsure of to a reference. The spec, the file beside the variant folders that declares
them, whether two variants can form one, and the decision rule; running one is the
service's (service/inference.py) and `compressor evaluate`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from variant import heads

CASCADE_FILE = "cascades.json"  # in the models folder, beside the variant folders


class CascadeSpec(BaseModel):
    """A virtual model: answer with `fast`; inputs whose top-1 probability is under
    `threshold` are answered by `reference` instead."""

    model_config = ConfigDict(extra="forbid")
    fast: str
    reference: str
    threshold: float = Field(ge=0, le=1)


def read_cascade_file(models: Path) -> dict[str, CascadeSpec]:
    """The cascades declared in `models/cascades.json` ({} without the file). Raises
    OSError, ValueError or pydantic's ValidationError on a bad file."""
    path = models / CASCADE_FILE
    if not path.is_file():
        return {}
    return TypeAdapter(dict[str, CascadeSpec]).validate_python(json.loads(path.read_text("utf-8")))


def unfit(name: str, spec: CascadeSpec, head_of: Mapping[str, heads.Signature]) -> str | None:
    """Why `fast` and `reference` cannot form cascade `name`, or None. `head_of` gives each
    variant's (task, labels). The threshold is on a top-1 probability, so both must be
    single_label, and comparable."""
    fast, reference = head_of[spec.fast], head_of[spec.reference]
    problem = heads.comparable(spec.fast, fast, spec.reference, reference)
    if problem is not None:
        return f"cascade {name!r}: {problem}"
    if fast[0] != "single_label":
        return f"cascade {name!r}: cascades need single_label variants, not {fast[0]}"
    return None


def unsure(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Row indices the reference must answer: top-1 probability under the threshold."""
    return np.flatnonzero(probabilities.max(axis=1) < threshold)


def merge(fast: np.ndarray, rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The cascade's answers: the fast variant's, with `rows` replaced by the reference's
    answers for them (in order)."""
    merged = fast.copy()
    merged[rows] = reference
    return merged
