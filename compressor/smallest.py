"""`compressor smallest`: the smallest variant that stays within a stated loss.

A ladder of recipes is tried from the one that usually gives the smallest file to the
largest; each is built, exported and scored through ONNX Runtime, and the first whose
score holds the bound becomes the variant. The last rung is the plain fp32 export, so
there is always an answer, even if it is "nothing smaller held".

The score is accuracy on a labelled TSV (`--data`; the bound is `--max-drop` points below
the fp32 export's accuracy), or, with unlabeled text only, agreement with the fp32 export
(the bound is `--max-drop` points below 100%). Unlabeled text is split: the methods see
the first 80%, the agreement is measured on the other 20%, so no recipe is scored on the
text it was fitted to. A rung whose methods need calibration text is skipped when there
is none, and the trail says so.

Importing this module imports no torch, and `smallest` checks its inputs (`check_inputs`)
before it loads torch, the model and the methods: bad input fails at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compressor.data import Examples, label_ids
from compressor.errors import InputError
from compressor.evaluate import open_variant, predict
from compressor.inputs import check_checkpoint, check_out
from compressor.recipe import (
    NEEDS_CALIBRATION,
    Recipe,
    check_recipe,
    parse_method,
    pipeline_name,
)
from service.manifest import Manifest

# (method, quantize), smallest file first on BERT-family classifiers: 4-bit weights and
# 4-bit embedding rows everywhere, the embedding table factorized, then pruning and layer
# dropping on top; the last rungs give up compression for accuracy.
LADDER: tuple[tuple[str, str | None], ...] = (
    ("drop-layers@0.67+prune@0.62+embed-ae@0.3", "int4-emb4"),
    ("prune@0.62+embed-ae@0.3", "int4-emb4"),
    ("prune@0.62+embed-ae@0.4", "int4-emb4"),
    ("drop-layers@0.83+embed-ae@0.4", "int4-emb4"),
    ("embed-ae@0.4", "int4-emb4"),
    ("embed-ae@0.5", "int4-emb4"),
    ("none", "int4-emb4"),
    ("none", "int4"),
    ("none", "int8"),
    ("none", None),
)
HELD_OUT = 0.2  # share of unlabeled text kept for scoring


@dataclass(frozen=True)
class Attempt:
    method: str
    quantize: str | None
    onnx_bytes: int | None  # None: skipped
    score: float | None
    held: bool
    seconds: float
    note: str = ""

    def line(self, metric: str) -> str:
        recipe = pipeline_name(parse_method(self.method), self.quantize)
        if self.onnx_bytes is None:
            return f"  {recipe:<52} skipped: {self.note}"
        verdict = "holds" if self.held else "misses"
        return (f"  {recipe:<52} {self.onnx_bytes / 1e6:7.1f} MB  {metric} {self.score:.4f}  {verdict}  "
                f"({self.seconds:.0f} s)")


def check_ladder(ladder: tuple[tuple[str, str | None], ...]) -> None:
    for method, quantize in ladder:
        check_recipe(Recipe("check", method, 1.0, quantize))


def check_inputs(model: str, name: str, out: Path, max_drop: float, data: Examples | None,
                 calibration: list[str] | None) -> None:
    """Everything `compressor smallest` can refuse before loading the model."""
    check_recipe(Recipe(name))
    check_out(out)
    if not 0 <= max_drop <= 100:
        raise InputError(f"--max-drop is in accuracy points, from 0 to 100; got {max_drop}")
    if data is None and not calibration:
        raise InputError("smallest needs --data (a labelled TSV) or --calibration (unlabeled text) to score on")
    if data is not None and data.labels is None:
        raise InputError("--data has no label column; pass --label-col, or score on --calibration text")
    if data is None and not held_out_split(calibration)[1]:
        raise InputError("--calibration needs at least 2 texts: 80% fit the methods, 20% score them")
    check_checkpoint(model)


def held_out_split(calibration: list[str]) -> tuple[list[str], list[str]]:
    """(texts for the methods, texts to score agreement on)."""
    cut = max(1, int(len(calibration) * (1 - HELD_OUT)))
    return calibration[:cut], calibration[cut:]


def scorer(data: Examples | None, held_out: list[str] | None, reference: Path, threads: int
           ) -> tuple[Callable[[Path], float], float, str]:
    """A function scoring a variant folder, the reference's own score, and the metric's name."""
    if data is not None and data.labels is not None:
        texts = data.inputs()
        variant = open_variant(reference, threads)
        truth = np.array(label_ids(data.labels, variant.manifest.labels))

        def accuracy(folder: Path) -> float:
            return float((predict(open_variant(folder, threads), texts) == truth).mean())

        return accuracy, float((predict(variant, texts) == truth).mean()), "accuracy"
    texts = list(held_out or [])
    expected = predict(open_variant(reference, threads), texts)

    def agreement(folder: Path) -> float:
        return float((predict(open_variant(folder, threads), texts) == expected).mean())

    return agreement, 1.0, "agreement"


def smallest(model: str, name: str, out: Path, max_drop: float, data: Examples | None = None,
             calibration: list[str] | None = None, ladder: tuple[tuple[str, str | None], ...] = LADDER,
             report: Callable[[str], None] = print) -> tuple[Manifest, list[Attempt]]:
    """Build the first rung of `ladder` whose score is within `max_drop` points of the fp32
    export's and write it as `out/name`; returns its manifest and the trail of attempts."""
    check_inputs(model, name, out, max_drop, data, calibration)
    check_ladder(ladder)
    # torch and transformers load here, once the inputs have passed the checks above.
    from compressor.checkpoint import load_classifier
    from compressor.export import replace_folder
    from compressor.pipeline import build

    held_out = None
    if data is None:
        calibration, held_out = held_out_split(calibration)
    classifier = load_classifier(model)
    threads = os.cpu_count() or 1
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".smallest-", dir=out))  # hidden: the service skips it
    try:
        build(classifier, Recipe("fp32"), work)
        score, reference_score, metric = scorer(data, held_out, work / "fp32", threads)
        bound = reference_score - max_drop / 100
        report(f"fp32 export: {metric} {reference_score:.4f}; a rung holds at {metric} >= {bound:.4f}")
        trail: list[Attempt] = []
        for rung, (method, quantize) in enumerate(ladder):
            needy = [n for n, _ in parse_method(method) if n in NEEDS_CALIBRATION]
            if needy and not calibration:
                trail.append(Attempt(method, quantize, None, None, False, 0.0, f"{needy[0]} needs --calibration"))
                report(trail[-1].line(metric))
                continue
            start = time.perf_counter()
            folder = work / f"rung-{rung}"
            manifest = build(classifier, Recipe(name, method, 1.0, quantize), folder, calibration)
            value = score(folder / name)
            held = value >= bound - 1e-9
            trail.append(Attempt(method, quantize, manifest.onnx_bytes, value, held, time.perf_counter() - start))
            report(trail[-1].line(metric))
            if held:
                replace_folder(folder / name, out / name)
                return manifest, trail
        raise AssertionError("the ladder ends with the plain export, which always holds")
    finally:
        shutil.rmtree(work, ignore_errors=True)
