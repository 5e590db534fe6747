"""Cascades: a virtual model that answers with a fast variant and hands the inputs it is
unsure of to a reference. The spec, the file that declares cascades beside the variant
folders, and the rule that picks the unsure inputs, shared by the service and by
`compressor evaluate`. Imports neither the web stack nor torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

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


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def unsure(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Row indices the reference must answer: top-1 probability under the threshold."""
    return np.flatnonzero(probabilities.max(axis=1) < threshold)
