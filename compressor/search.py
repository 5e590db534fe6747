"""`compressor search`: the fastest (or smallest) variant that stays within a stated loss.

Candidates are recipes × runtimes. Each recipe is built and exported once; the graph is
then run on every runtime this machine has (ONNX Runtime at f32; OpenVINO at f32, and at
bf16 where the CPU computes it) and each (recipe, runtime) is scored and timed here, on
the machine the variant will serve from. A candidate holds when its score is within
`--max-drop` points of the fp32 export's on ONNX Runtime.

- `--objective latency`: recipes come in families, least aggressive first (prune 0.85,
  0.75, 0.62 ... each with an int8); a family is followed to its next step only while
  its last step held and was the fastest holding candidate so far: a recipe slower than
  the best that holds is not refined. The winner is the fastest holding candidate.
- `--objective size`: one ladder, smallest file first (4-bit weights, factorized
  embeddings, pruning), as `compressor smallest` always did; the first rung that holds
  wins, on its fastest holding runtime.

Latency is the median time of a request of the scoring texts at each batch size of the
profile (`--batch 1`, `32`, or `mix`: both), tokenized, padded and run as the service
runs it (variant/measure.py) and timed warm, as a speed-up over the fp32 export on ONNX
Runtime (geometric mean over the profile's sizes), measured in the same process.

The score is accuracy on a labelled TSV (`--data`; the Pearson correlation with the labels
for a regression head), or, with unlabeled text only, agreement with the fp32 export as
the model's task defines it (variant/heads.py) on held-out calibration text (the methods see the first
80%, the score is taken on the other 20%). `--time-budget` stops the search from starting
another build once spent; the best candidate so far wins. The winner's manifest records
the runtime it won on and the whole search: objective, bound, score and trail.

Importing this module imports no torch; `search` checks its inputs before it loads torch.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from compressor.data import Examples
from compressor.errors import InputError
from compressor.evaluate import labelled_metric, labelled_score
from compressor.inputs import check_checkpoint, check_out
from compressor.recipe import (
    NEEDS_CALIBRATION,
    Recipe,
    check_recipe,
    parse_method,
    pipeline_name,
    quantizer,
)
from variant import heads, measure
from variant.backends import runtimes
from variant.folder import Opened, open_on
from variant.manifest import Manifest, Runtime, write_manifest
from variant.tokenization import TextInput

Objective = Literal["latency", "size"]
OBJECTIVES: tuple[Objective, ...] = ("latency", "size")
PROFILES: dict[str, tuple[int, ...]] = {"1": (1,), "32": (32,), "mix": (1, 32)}
RUNS = {1: 40, 32: 6}  # timed runs per batch size, after every shape has run once
HELD_OUT = 0.2  # share of unlabeled text kept for scoring
PARITY_TEXTS = 32  # scoring texts (pairs for a pair model) a runtime's logits are checked on
Step = tuple[str, str | None]  # (method, quantize)

# Families for the latency objective, each least aggressive first.
LATENCY_FAMILIES: tuple[tuple[Step, ...], ...] = (
    (("none", None),),  # the plain export, on the runtimes besides ONNX Runtime at f32 (bf16, say)
    (("none", "int8"),),
    (("none", "int8-static"),),
    (("none", "int8-nncf"),),
    (("prune@0.85", "int8-nncf"), ("prune@0.75", "int8-nncf"), ("prune@0.62", "int8-nncf"),
     ("prune@0.5", "int8-nncf")),
    (("prune@0.85", "int8"), ("prune@0.75", "int8"), ("prune@0.62", "int8"), ("prune@0.5", "int8")),
)

# The size objective's ladder, smallest file first on BERT-family classifiers; the last
# rungs give up compression for accuracy, and the plain export always holds.
SIZE_LADDER: tuple[Step, ...] = (
    ("drop-layers@0.67+prune@0.62+embed-ae@0.3", "int4-emb4"),
    ("prune@0.62+embed-ae@0.3", "int4-emb4"),
    ("prune@0.62+embed-ae@0.4", "int4-emb4"),
    ("prune@0.75+embed-ae@0.4", "int4-emb4-b64"),
    ("prune@0.75+embed-ae@0.4", "int4-emb4-hqq-b64"),  # HQQ's float zero points: larger, often closer
    ("drop-layers@0.83+embed-ae@0.4", "int4-emb4"),
    ("embed-ae@0.4", "int4-emb4"),
    ("embed-ae@0.5", "int4-emb4"),
    ("none", "int4-emb4"),
    ("none", "int4"),
    ("none", "int8"),
    ("none", None),
)


@dataclass(frozen=True)
class Attempt:
    """One (recipe, runtime) tried, or a recipe skipped (`runtime` None, `note` why)."""

    method: str
    quantize: str | None
    runtime: str | None  # "openvino/bf16"
    onnx_bytes: int | None
    score: float | None
    held: bool
    latency_ms: dict[str, float] = field(default_factory=dict)  # by batch size
    speedup: float | None = None  # over the fp32 export on ONNX Runtime: geometric mean over the profile
    speedups: dict[str, float] = field(default_factory=dict)  # by batch size
    seconds: float = 0.0  # building and measuring the recipe
    note: str = ""

    @property
    def recipe(self) -> str:
        return pipeline_name(parse_method(self.method), self.quantize)

    def line(self, metric: str) -> str:
        if self.score is None:
            return f"  {self.recipe:<46} {self.runtime or '':<17} skipped: {self.note}"
        verdict = "holds" if self.held else "misses"
        each = ", ".join(f"b{size} {x:.2f}x" for size, x in self.speedups.items())
        return (f"  {self.recipe:<46} {self.runtime:<17} {self.onnx_bytes / 1e6:6.1f} MB  {metric} {self.score:.4f}  "
                f"{self.speedup:5.2f}x ({each})  {verdict}")


@dataclass
class Scoring:
    """What every candidate is scored and timed on."""

    texts: list[TextInput]
    labels: list[str] | None  # label cells per text; None: agreement with the reference
    metric: str  # what the score is: accuracy (pearson for regression), or agreement
    threads: int
    profile: tuple[int, ...]
    reference_ms: dict[str, float] = field(default_factory=dict)
    reference: np.ndarray | None = None  # the fp32 export's scores, set by its own scoring

    def score(self, variant: Opened) -> float:
        """The labelled score, or agreement with the reference as the task defines it."""
        task, mine = variant.manifest.task, measure.answers(variant, self.texts)
        if self.labels is not None:
            return labelled_score(task, mine, self.labels, variant.manifest.labels)
        if self.reference is None:
            self.reference = mine
        return heads.agreement(task, mine, self.reference)["agreement"]

    def latency(self, variant: Opened) -> dict[str, float]:
        """Median ms of a request at each batch size of the profile, as the service runs it."""
        return {str(size): ms["p50"] for size, ms in measure.latency(variant, self.texts, self.profile, RUNS).items()}

    def speedups(self, measured: dict[str, float]) -> dict[str, float]:
        return {size: round(self.reference_ms[size] / ms, 3) for size, ms in measured.items()}


def check_inputs(model: str, name: str, out: Path, max_drop: float, data: Examples | None,
                 calibration: list[TextInput] | None, objective: str = "size", batch: str = "mix",
                 time_budget: float | None = None) -> None:
    """Everything `compressor search` can refuse before loading the model."""
    check_recipe(Recipe(name))
    check_out(out)
    if objective not in OBJECTIVES:
        raise InputError(f"--objective is {' or '.join(OBJECTIVES)}; got {objective!r}")
    if batch not in PROFILES:
        raise InputError(f"--batch is one of {', '.join(PROFILES)}; got {batch!r}")
    if time_budget is not None and time_budget <= 0:
        raise InputError(f"--time-budget is in seconds, above 0; got {time_budget:g}")
    if not 0 <= max_drop <= 100:
        raise InputError(f"--max-drop is in accuracy points, from 0 to 100; got {max_drop}")
    if data is None and not calibration:
        raise InputError("search needs --data (a labelled TSV) or --calibration (unlabeled text) to score on")
    if data is not None and data.labels is None:
        raise InputError("--data has no label column; pass --label-col, or score on --calibration text")
    if data is None and not held_out_split(calibration)[1]:
        raise InputError("--calibration needs at least 2 texts: 80% fit the methods, 20% score them")
    check_checkpoint(model)


def held_out_split(calibration: list[TextInput]) -> tuple[list[TextInput], list[TextInput]]:
    """(texts for the methods, texts to score agreement on)."""
    cut = max(1, int(len(calibration) * (1 - HELD_OUT)))
    return calibration[:cut], calibration[cut:]


def parity(variant: Opened, reference: Opened, inputs: list[TextInput]) -> float:
    """Max |logit difference| between a runtime and ONNX Runtime on the same graph."""
    return float(np.abs(measure.logits(variant, inputs) - measure.logits(reference, inputs)).max())


def try_recipe(build: Callable[[Step, Path], Manifest], step: Step, folder: Path, scoring: Scoring,
               bound: float, runtimes_here: list[Runtime], calibration: list[TextInput] | None) -> list[Attempt]:
    """Build one recipe and measure it on every runtime; one Attempt per runtime."""
    method, quantize = step
    needy = [n for n, _ in parse_method(method) if n in NEEDS_CALIBRATION] or \
        ([quantize] if quantize and quantizer(quantize).needs_calibration else [])
    if needy and not calibration:
        return [Attempt(method, quantize, None, None, None, False, note=f"{needy[0]} needs --calibration")]
    start = time.perf_counter()
    try:
        manifest = build(step, folder)
    except InputError as exc:  # a method this model's family refuses (compressor/families.py): a candidate less
        return [Attempt(method, quantize, None, None, None, False, note=str(exc))]
    attempts = []
    for runtime in runtimes_here:
        try:
            variant = open_on(folder / manifest.name, runtime, scoring.threads)
        except Exception as exc:  # noqa: BLE001 - a graph a runtime cannot run is a candidate less
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            attempts.append(Attempt(method, quantize, runtime.label(), None, None, False, note=reason))
            continue
        value = scoring.score(variant)
        measured = scoring.latency(variant)
        speedups = scoring.speedups(measured)
        attempts.append(Attempt(method, quantize, runtime.label(), manifest.onnx_bytes, value, value >= bound - 1e-9,
                                measured, round(geometric_mean(speedups.values()), 3), speedups))
    elapsed = time.perf_counter() - start
    return [Attempt(**{**asdict(a), "seconds": round(elapsed, 1)}) for a in attempts]


def geometric_mean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def best(attempts: list[Attempt], objective: Objective) -> Attempt | None:
    held = [a for a in attempts if a.held]
    if not held:
        return None
    if objective == "size":
        return min(held, key=lambda a: (a.onnx_bytes, -a.speedup))
    return max(held, key=lambda a: a.speedup)


def plan(objective: Objective, families: tuple[tuple[Step, ...], ...] | None, ladder: tuple[Step, ...] | None
         ) -> tuple[tuple[Step, ...], ...]:
    if objective == "size":
        return (ladder or SIZE_LADDER,)
    return families or LATENCY_FAMILIES


def search(model: str, name: str, out: Path, max_drop: float, data: Examples | None = None,
           calibration: list[TextInput] | None = None, objective: Objective = "size", batch: str = "mix",
           time_budget: float | None = None, threads: int | None = None,
           families: tuple[tuple[Step, ...], ...] | None = None, ladder: tuple[Step, ...] | None = None,
           runtimes_here: list[Runtime] | None = None, report: Callable[[str], None] = print
           ) -> tuple[Manifest, list[Attempt]]:
    """Search, write the winner as `out/name`, and return its manifest and the trail."""
    check_inputs(model, name, out, max_drop, data, calibration, objective, batch, time_budget)
    for family in plan(objective, families, ladder):
        for method, quantize in family:
            check_recipe(Recipe("check", method, 1.0, quantize))
    # torch and transformers load here, once the inputs have passed the checks above.
    from compressor.checkpoint import load_classifier
    from compressor.export import replace_folder
    from compressor.pipeline import build as build_recipe

    started = time.perf_counter()
    held_out = None
    if data is None:
        calibration, held_out = held_out_split(calibration)
    classifier = load_classifier(model)
    threads = threads or os.cpu_count() or 1
    runtimes_here = runtimes_here or runtimes()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".search-", dir=out))  # hidden: the service skips it
    try:
        def build(step: Step, folder: Path) -> Manifest:
            return build_recipe(classifier, Recipe(name, step[0], 1.0, step[1]), folder, calibration)

        build(("none", None), work / "fp32")
        reference = open_on(work / "fp32" / name, Runtime(), threads)
        scoring = Scoring(data.inputs() if data is not None else list(held_out),
                          data.labels if data is not None else None,
                          labelled_metric(reference.manifest.task) if data is not None else "agreement",
                          threads, PROFILES[batch])
        reference_score = scoring.score(reference)
        scoring.reference_ms = scoring.latency(reference)
        bound = reference_score - max_drop / 100
        report(f"fp32 export on onnxruntime/f32: {metric_line(scoring.metric, reference_score, scoring.reference_ms)}; "
               f"a candidate holds at {scoring.metric} >= {bound:.4f}")
        report(f"runtimes here: {', '.join(r.label() for r in runtimes_here)}; batch profile {batch}; "
               f"objective {objective}")
        trail: list[Attempt] = []
        winner: tuple[Attempt, Path] | None = None
        steps = 0
        out_of_time = False
        for family in plan(objective, families, ladder):
            for step in family:
                out_of_time = time_budget is not None and time.perf_counter() - started > time_budget
                if out_of_time:  # the next candidate is named in the trail, then the search ends
                    trail.append(Attempt(*step, None, None, None, False, note="time budget spent"))
                    report(trail[-1].line(scoring.metric))
                    break
                steps += 1
                folder = work / f"step-{steps}"
                attempts = try_recipe(build, step, folder, scoring, bound, runtimes_here, calibration)
                trail += attempts
                for attempt in attempts:
                    report(attempt.line(scoring.metric))
                found = best(attempts, objective)
                if objective == "size":
                    if found is None:
                        continue  # missed: the next rung is larger and may hold
                    winner = (found, folder)
                    break
                if found is None:
                    break  # missed: the family's more aggressive steps would miss by more
                if winner is not None and found.speedup <= winner[0].speedup:
                    break  # slower than the best that holds: not refined
                winner = (found, folder)
            if out_of_time or (objective == "size" and winner is not None):
                break
        if winner is None:  # nothing held (or the budget ran out first): the plain export
            attempt = Attempt("none", None, "onnxruntime/f32", reference.manifest.onnx_bytes, reference_score, True,
                              scoring.reference_ms, 1.0, {size: 1.0 for size in scoring.reference_ms})
            winner = (attempt, work / "fp32")
        chosen, folder = winner
        manifest = record(folder / name, chosen, reference, scoring, objective, batch, max_drop, reference_score,
                          bound, trail, time.perf_counter() - started)
        replace_folder(folder / name, out / name)
        return manifest, trail
    finally:
        shutil.rmtree(work, ignore_errors=True)


def metric_line(metric: str, value: float, measured: dict[str, float]) -> str:
    times = ", ".join(f"batch {size} {ms:.2f} ms" for size, ms in measured.items())
    return f"{metric} {value:.4f}, {times}"


def record(folder: Path, chosen: Attempt, reference: Opened, scoring: Scoring, objective: Objective, batch: str,
           max_drop: float, reference_score: float, bound: float, trail: list[Attempt], seconds: float) -> Manifest:
    """Write the runtime it won on, and the search that chose it, into the winner's manifest."""
    backend, precision = chosen.runtime.split("/")
    variant = open_on(folder, Runtime(backend=backend, precision=precision), scoring.threads)
    manifest = variant.manifest
    manifest.runtime = Runtime(backend=backend, precision=precision, speedup=chosen.speedup,
                               speedups=chosen.speedups, batch=batch, latency_ms=chosen.latency_ms,
                               parity_vs_onnxruntime=round(parity(variant, reference, scoring.texts[:PARITY_TEXTS]), 6))
    manifest.search = {
        "objective": objective, "batch": batch, "max_drop": max_drop, "metric": scoring.metric,
        "reference_score": round(reference_score, 4), "reference_latency_ms": scoring.reference_ms,
        "bound": round(bound, 4), "score": round(chosen.score, 4), "seconds": round(seconds, 1),
        "trail": [{k: v for k, v in asdict(a).items() if v not in (None, "", {})} for a in trail],
    }
    write_manifest(folder, manifest)
    return manifest
