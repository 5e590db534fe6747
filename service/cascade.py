"""Cascades: a virtual model that answers with a fast variant and hands the inputs it is
unsure of to a reference. Everything about them lives here: the spec, reading them from
the settings and the file beside the variant folders, the rule that picks the unsure
inputs (shared with `compressor evaluate`), checking whether one can serve, and running
one. Imports neither the web stack nor torch, so the compressor can import it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

if TYPE_CHECKING:
    from service.inference import Outcome
    from service.metrics import Metrics
    from service.repository import Variant
    from service.serving import ReadyVariant
    from service.tokenization import TextInput

CASCADE_FILE = "cascades.json"  # in the models folder, beside the variant folders

log = logging.getLogger("slimserve.cascade")


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


def read_cascades(declared: Mapping[str, CascadeSpec], models: Path) -> dict[str, CascadeSpec]:
    """The cascades of the settings and of models/cascades.json (the file wins on a clash);
    a bad file is logged and ignored, so the variants still serve."""
    specs = dict(declared)
    try:
        specs.update(read_cascade_file(models))
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("ignoring %s: %s", models / CASCADE_FILE, str(exc).splitlines()[0])
    return specs


def unsure(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Row indices the reference must answer: top-1 probability under the threshold."""
    return np.flatnonzero(probabilities.max(axis=1) < threshold)


def problem(name: str, spec: CascadeSpec, variants: Mapping[str, Variant], ready: Collection[str]) -> str | None:
    """Why cascade `name` cannot answer now, or None: it has a variant's name, a variant
    it needs does not serve (`ready`: the variants that do), or the two disagree on labels."""
    if name in variants:
        return f"cascade {name!r} has the name of a variant"
    missing = [m for m in (spec.fast, spec.reference) if m not in ready]
    if missing:
        return f"cascade {name!r} needs {', '.join(missing)}, which is not ready"
    if variants[spec.fast].manifest.labels != variants[spec.reference].manifest.labels:
        return f"cascade {name!r}: {spec.fast} and {spec.reference} have different labels"
    tasks = {variants[m].manifest.task for m in (spec.fast, spec.reference)}
    if tasks != {"single_label"}:  # the threshold is on the top-1 probability
        return f"cascade {name!r}: cascades need single_label variants, not {', '.join(sorted(tasks))}"
    return None


@dataclass(frozen=True)
class Cascade:
    """A cascade that can answer: its spec and the two serving variants it runs on."""

    name: str
    spec: CascadeSpec
    fast: ReadyVariant
    reference: ReadyVariant

    @property
    def labels(self) -> list[str]:
        return self.fast.labels

    @property
    def task(self) -> str:
        return self.fast.task


async def run(cascade: Cascade, inputs: list[TextInput], truncate: bool, metrics: Metrics) -> Outcome:
    """Every input through the fast variant; those it is unsure of through the reference,
    whose answers replace the fast ones."""
    # Imported here: inference imports this module, and brings the web stack, which
    # `compressor evaluate` (importing this module too) does without.
    from service.inference import run_variant

    fast = await run_variant(cascade.fast, inputs, truncate)
    unsure_rows = unsure(fast.scores, cascade.spec.threshold)
    metrics.cascade_inputs.labels(cascade.name).inc(len(inputs))
    if unsure_rows.size == 0:
        return fast
    metrics.cascade_fallbacks.labels(cascade.name).inc(unsure_rows.size)
    reference = await run_variant(cascade.reference, [inputs[i] for i in unsure_rows], truncate)
    logits, scores = fast.logits.copy(), fast.scores.copy()
    logits[unsure_rows], scores[unsure_rows] = reference.logits, reference.scores
    return dataclasses.replace(
        fast, logits=logits, scores=scores, queue_seconds=fast.queue_seconds + reference.queue_seconds,
        inference_seconds=fast.inference_seconds + reference.inference_seconds,
        digest=f"{fast.digest},{reference.digest}")
