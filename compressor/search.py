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
  wins, on its fastest holding runtime. Each rung's line names its speed-up at each batch
  size on each runtime; with `--min-speedup X` a rung that holds on its score but is
  slower than X times the fp32 export at some batch size of the profile, on every runtime,
  misses as too slow.

Speed is measured at each batch size of the profile (`--batch 1`, `32`, or `mix`: both) on
the scoring texts, tokenized, padded and run as the service runs them (variant/measure.py)
and timed warm: at batch 1 the median time of a request alone (what one client waits), at
batch 32 the time per request with the cores busy. It is a speed-up over the fp32 export on
ONNX Runtime (geometric mean over the profile's sizes), measured on the same machine.

Threads per run are a dimension too: each runtime is timed with all `threads` per run, one
run at a time, and (with more than one thread) with one thread per run and `threads` runs
side by side, as the service runs a variant whose manifest records `runtime.threads` 1.

The score is accuracy on a labelled TSV (`--data`; the Pearson correlation with the labels
for a regression head), or, with unlabeled text only, agreement with the fp32 export as
the model's task defines it (variant/heads.py) on held-out calibration text (the methods see the first
80%, the score is taken on the other 20%). A quantizer whose answers depend on the batch
(dynamic `int8`: one activation scale per batch) is skipped unless `batch_dependent`
(`--batch-dependent`), and named in the trail as skipped. The winner's manifest records
the runtime it won on and the whole search: objective, bound, score and trail.

`--time-budget` is a wall-clock limit on the whole search, counted from the call: the fp32
export and every candidate are then built and measured each in a child process (a fork
server's, which has imported torch but computed nothing, so its forks are safe), and the one
running at the limit is killed, its folder removed, and named in the trail as stopped; the
best candidate that held by then wins, and the manifest records the budget. If the fp32
export itself is not built and measured within the budget there is nothing to compare
with: InputError (the command exits 2). Without a budget everything runs in this process.
After each candidate the search reports the time spent and an estimate of what is left;
each build and measurement reports progress at least every 10 s (compressor/progress.py).

Importing this module imports no torch; `search` checks its inputs before it loads torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import multiprocessing
import os
import pickle
import select
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compressor import progress
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
from variant.manifest import Manifest, Runtime, read_manifest, write_manifest
from variant.tokenization import TextInput

Objective = Literal["latency", "size"]
OBJECTIVES: tuple[Objective, ...] = ("latency", "size")
PROFILES: dict[str, tuple[int, ...]] = {"1": (1,), "32": (32,), "mix": (1, 32)}
RUNS = {1: 40, 32: 8}  # timed runs per batch size, after every shape has run once
HELD_OUT = 0.2  # share of unlabeled text kept for scoring
PARITY_TEXTS = 32  # scoring texts (pairs for a pair model) a runtime's logits are checked on
VARIATION_TEXTS = 128  # scoring texts run alone and in batches to see whether answers move with the batch
STOPPED = "stopped at the time budget"
FAILED = "failed"
TOO_SLOW = "too slow"
GRACE = 2.0  # seconds a child that has sent its result gets to exit before it is killed
# What the fork server imports once, so that each child starts in milliseconds, not seconds.
# None of them may start a Python thread on import: a fork while another thread holds a lock
# (an import's, say) leaves the child waiting on it for ever. So not variant.backends.openvino:
# importing OpenVINO's converter starts its telemetry's sender thread (a child imports it itself).
CHILD_MODULES = ("compressor.pipeline", "compressor.search", "variant.backends.ort")
Step = tuple[str, str | None]  # (method, quantize)
Builder = Callable[..., Manifest]  # compressor.pipeline.build(classifier, recipe, out, calibration)

# Families for the latency objective, each least aggressive first. The rows with dynamic
# int8 are skipped unless asked for (--batch-dependent): its answers depend on the batch.
PRUNE_STEPS = (0.85, 0.75, 0.62, 0.5)  # kept fractions, least aggressive first
LATENCY_FAMILIES: tuple[tuple[Step, ...], ...] = (
    (("none", None),),  # the plain export, on the runtimes besides ONNX Runtime at f32 (bf16, say)
    (("none", "fused"),),  # fewer, larger operators: what a run of one short text pays for most
    (("none", "int8-static"),),
    (("none", "int8-nncf"),),
    (("none", "int8"),),  # skipped unless --batch-dependent
    *(tuple((f"prune@{ratio}", quantize) for ratio in PRUNE_STEPS)
      for quantize in ("int8-static", "int8-nncf", "fused", "int8")),
)

# The size objective's ladder, smallest file first on BERT-family classifiers; the last
# rungs give up compression for accuracy, and the plain export always holds.
# Rungs that calibrate anyway (prune, drop-layers) round their 4-bit weights with GPTQ:
# the same bytes as min-max, and closer on the calibration text's activations.
SIZE_LADDER: tuple[Step, ...] = (
    ("drop-layers@0.67+prune@0.62+embed-ae@0.3", "int4-emb4-gptq"),
    ("prune@0.62+embed-ae@0.3", "int4-emb4-gptq"),
    ("prune@0.62+embed-ae@0.4", "int4-emb4-gptq"),
    # Blocks over 32 computed in int8 (accuracy level 4) move answers with the batch on ONNX
    # Runtime; in float (acc1) they do not.
    ("prune@0.75+embed-ae@0.4", "int4-emb4-b128-gptq-acc1"),
    ("prune@0.75+embed-ae@0.4", "int4-emb4-b64-gptq-acc1"),
    # The whole token table in 2 bits, its most used rows in 8 (hot1024): closer than embed-ae's
    # latents at about the same size.
    ("prune@0.75+embed-ae@0.8", "int4-emb2-hot1024-b64-gptq-acc1"),
    ("prune@0.75+embed-ae@0.4", "int4-emb4-hqq-b64"),  # HQQ's float zero points: larger, often closer
    ("prune@0.75", "int4-emb2-hot1024-b64-gptq-acc1"),
    ("drop-layers@0.83+embed-ae@0.4", "int4-emb4-gptq"),
    ("embed-ae@0.4", "int4-emb4"),
    ("embed-ae@0.5", "int4-emb4"),
    ("none", "int4-emb4"),
    ("none", "int4"),
    ("none", "int8"),  # skipped unless --batch-dependent
    ("none", None),
)


@dataclass(frozen=True)
class Attempt:
    """One (recipe, runtime) tried, or a recipe skipped, stopped or failed (`runtime` None, `note` why)."""

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
    parity: float | None = None  # max |logit difference| from the fp32 export on ONNX Runtime
    batch_variation: float | None = None  # largest |Δ score| alone against in a batch (variant.measure)
    threads: int | None = None  # per run; the runs side by side are the search's threads // this

    @property
    def recipe(self) -> str:
        return pipeline_name(parse_method(self.method), self.quantize)

    def line(self, metric: str) -> str:
        if self.score is None:
            why = self.note if self.note.startswith((STOPPED, FAILED)) else f"skipped: {self.note}"
            return f"  {self.recipe:<46} {self.runtime or '':<20} {why}"
        verdict = "holds" if self.held else f"misses: {self.note}" if self.note.startswith(TOO_SLOW) else \
            "misses: answers move with the batch" if self.note else "misses"
        each = ", ".join(f"b{size} {x:.2f}x" for size, x in self.speedups.items())
        runtime = f"{self.runtime} {self.threads}t" if self.threads else self.runtime
        return (f"  {self.recipe:<46} {runtime:<20} {self.onnx_bytes / 1e6:6.1f} MB  {metric} {self.score:.4f}  "
                f"{self.speedup:5.2f}x ({each})  {verdict}")


@dataclass
class Scoring:
    """What every candidate is scored and timed on, and the fp32 export's figures (set by
    `measure_reference`)."""

    texts: list[TextInput]
    labels: list[str] | None  # label cells per text; None: agreement with the reference
    metric: str  # what the score is: accuracy (pearson for regression), or agreement
    threads: int
    profile: tuple[int, ...]
    reference_ms: dict[str, float] = field(default_factory=dict)
    reference_folder: Path | None = None  # the fp32 export, timed again beside each candidate
    reference: np.ndarray | None = None  # the fp32 export's scores, set by its own scoring
    reference_score: float | None = None
    reference_logits: np.ndarray | None = None  # on the first PARITY_TEXTS texts
    batch_dependent: bool = False  # True: a candidate whose answers move with its batch may hold

    def score(self, variant: Opened) -> float:
        """The labelled score, or agreement with the reference as the task defines it."""
        task, mine = variant.manifest.task, measure.answers(variant, self.texts)
        if self.labels is not None:
            return labelled_score(task, mine, self.labels, variant.manifest.labels)
        if self.reference is None:
            self.reference = mine
        return heads.agreement(task, mine, self.reference)["agreement"]

    def latency(self, variant: Opened) -> dict[str, float]:
        """Ms of a request at each batch size of the profile, as the service runs it: alone
        at batch 1, per request with the variant's runs side by side above."""
        return {str(size): measure.latency(variant, self.texts, (1,), RUNS)[1]["p50"] if size == 1
                else measure.throughput(variant, self.texts, size, RUNS[size]) for size in self.profile}

    def thread_plans(self) -> list[tuple[int, int]]:
        """(threads per run, runs side by side) to time each runtime with."""
        return [(self.threads, 1)] + ([(1, self.threads)] if self.threads > 1 else [])

    def speedups(self, measured: dict[str, float]) -> dict[str, float]:
        return {size: round(self.reference_ms[size] / ms, 3) for size, ms in measured.items()}

    def variation(self, variant: Opened) -> tuple[float, str]:
        """How far answers move with what shares their run on this runtime, and why that
        keeps the candidate from holding ("" where it does not): a served answer must not
        depend on its batch unless --batch-dependent allows it."""
        variation = measure.batch_variation(variant, self.texts[:VARIATION_TEXTS])
        if variation <= measure.INVARIANCE_LIMIT or self.batch_dependent:
            return variation, ""
        return variation, (f"answers move by {variation:.2g} with what shares their run (limit "
                           f"{measure.INVARIANCE_LIMIT:g}); --batch-dependent allows it")

    def parity(self, variant: Opened) -> float:
        """Max |logit difference| from the fp32 export on ONNX Runtime, on the same texts."""
        mine = measure.logits(variant, self.texts[:PARITY_TEXTS])
        return round(float(np.abs(mine - self.reference_logits).max()), 6)


def check_inputs(model: str, name: str, out: Path, max_drop: float, data: Examples | None,
                 calibration: list[TextInput] | None, objective: str = "size", batch: str = "mix",
                 time_budget: float | None = None, min_speedup: float | None = None) -> None:
    """Everything `compressor search` can refuse before loading the model."""
    check_recipe(Recipe(name))
    check_out(out)
    if objective not in OBJECTIVES:
        raise InputError(f"--objective is {' or '.join(OBJECTIVES)}; got {objective!r}")
    if batch not in PROFILES:
        raise InputError(f"--batch is one of {', '.join(PROFILES)}; got {batch!r}")
    if time_budget is not None and time_budget <= 0:
        raise InputError(f"--time-budget is in seconds, above 0; got {time_budget:g}")
    if min_speedup is not None:
        parse_min_speedup(str(min_speedup))
    if not 0 <= max_drop <= 100:
        raise InputError(f"--max-drop is in accuracy points, from 0 to 100; got {max_drop}")
    if data is None and not calibration:
        raise InputError("search needs --data (a labelled TSV) or --calibration (unlabeled text) to score on")
    if data is not None and data.labels is None:
        raise InputError("--data has no label column; pass --label-col, or score on --calibration text")
    if data is None and not held_out_split(calibration)[1]:
        raise InputError("--calibration needs at least 2 texts: 80% fit the methods, 20% score them")
    check_checkpoint(model)


def parse_min_speedup(text: str) -> float:
    """`--min-speedup X`: a finite number above 0, times the fp32 export's speed (1: at least as fast)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise InputError(f"--min-speedup is a factor of the fp32 export's speed, a number above 0 "
                         f"(1: at least as fast); got {text!r}")
    return value


def too_slow(attempt: Attempt, min_speedup: float | None) -> Attempt:
    """A held attempt slower than `min_speedup` times the fp32 export at some batch size misses."""
    if min_speedup is None or not attempt.held or min(attempt.speedups.values()) >= min_speedup:
        return attempt
    each = ", ".join(f"b{size} {x:.2f}x" for size, x in attempt.speedups.items())
    return dataclasses.replace(attempt, held=False, note=f"{TOO_SLOW} ({each}; --min-speedup {min_speedup:g})")


def held_out_split(calibration: list[TextInput]) -> tuple[list[TextInput], list[TextInput]]:
    """(texts for the methods, texts to score agreement on)."""
    cut = max(1, int(len(calibration) * (1 - HELD_OUT)))
    return calibration[:cut], calibration[cut:]


def skip_reason(step: Step, calibration: list[TextInput] | None, batch_dependent: bool) -> str | None:
    """Why a recipe is not built here, or None."""
    method, quantize = step
    if quantize and not batch_dependent and not quantizer(quantize).batch_invariant:
        return (f"{quantize} is not batch-invariant (a text's answer moves with what shares its batch); "
                "--batch-dependent tries it")
    needy = [n for n, _ in parse_method(method) if n in NEEDS_CALIBRATION] or \
        ([quantize] if quantize and quantizer(quantize).calibrated(quantize) else [])
    if needy and not calibration:
        return f"{needy[0]} needs --calibration"
    return None


def default_builder(builder: Builder | None) -> Builder:
    if builder is not None:
        return builder
    from compressor.pipeline import build

    return build


def measure_reference(classifier, builder: Builder | None, name: str, folder: Path, scoring: Scoring,
                      calibration: list[TextInput] | None) -> Scoring:
    """Build the fp32 export and fill in its score, latency and logits: what candidates are compared with."""
    with progress.step("fp32 export", "building") as status:
        default_builder(builder)(classifier, Recipe(name), folder, calibration)
        reference = open_on(folder / name, Runtime(), scoring.threads)
        if scoring.labels is not None:
            scoring.metric = labelled_metric(reference.manifest.task)
        status.what = "scoring"
        scoring.reference_score = scoring.score(reference)
        status.what = "timing"
        scoring.reference_ms = scoring.latency(reference)
        scoring.reference_folder = folder / name
        scoring.reference_logits = measure.logits(reference, scoring.texts[:PARITY_TEXTS])
    return scoring


def try_recipe(classifier, builder: Builder | None, name: str, step: Step, folder: Path, scoring: Scoring,
               bound: float, runtimes_here: list[Runtime], calibration: list[TextInput] | None) -> list[Attempt]:
    """Build one recipe and measure it on every runtime; one Attempt per runtime."""
    method, quantize = step
    start = time.perf_counter()
    with progress.step(pipeline_name(parse_method(method), quantize), "building") as status:
        try:
            manifest = default_builder(builder)(classifier, Recipe(name, method, 1.0, quantize), folder, calibration)
        except InputError as exc:  # a method this model's family refuses (compressor/families.py): a candidate less
            return [Attempt(method, quantize, None, None, None, False, note=str(exc))]
        attempts = []
        status.done, status.total = 0, len(runtimes_here)
        if scoring.reference_folder is not None:
            # Speed-ups are against the fp32 export timed now, in this process: a time taken
            # earlier, elsewhere, differs by more than the gaps between candidates.
            status.what = "timing the fp32 export again"
            scoring = dataclasses.replace(
                scoring, reference_ms=scoring.latency(open_on(scoring.reference_folder, Runtime(), scoring.threads)))
        for runtime in runtimes_here:
            status.what = f"measuring on {runtime.label()}"
            try:
                variant = open_on(folder / manifest.name, runtime, scoring.threads)
            except Exception as exc:  # noqa: BLE001 - a graph a runtime cannot run is a candidate less
                reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
                attempts.append(Attempt(method, quantize, runtime.label(), None, None, False, note=reason))
                continue
            value = scoring.score(variant)
            variation, moves = scoring.variation(variant)
            parity = scoring.parity(variant)
            for threads, parallel in scoring.thread_plans():  # the answers do not change with the threads
                if threads != scoring.threads:
                    variant = open_on(folder / manifest.name, runtime, threads, parallel)
                measured = scoring.latency(variant)
                speedups = scoring.speedups(measured)
                attempts.append(Attempt(method, quantize, runtime.label(), manifest.onnx_bytes, value,
                                        value >= bound - 1e-9 and not moves, measured,
                                        round(geometric_mean(speedups.values()), 3), speedups, note=moves,
                                        parity=parity, batch_variation=round(variation, 9), threads=threads))
            status.done += 1
    elapsed = time.perf_counter() - start
    return [Attempt(**{**asdict(a), "seconds": round(elapsed, 1)}) for a in attempts]


def listening(send) -> bool:
    """Whether the parent still holds the other end of `send` (poll says POLLERR once it is closed)."""
    if not hasattr(select, "poll"):  # Windows: assume it does
        return True
    poller = select.poll()
    poller.register(send.fileno(), select.POLLOUT)
    return not any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def work_in_child(send, model: str, job: Callable, args: tuple) -> None:
    """A child process's whole life: load the model, run `job`, send back what it returned or raised."""
    if not listening(send):  # forked after the parent stopped waiting (or exited): nothing to do
        return
    progress.lock_within_process()
    try:
        from huggingface_hub import constants

        from compressor.checkpoint import load_classifier

        constants.HF_HUB_OFFLINE = True  # the parent fetched a Hub checkpoint: a child reads the cache
        result = ("done", job(load_classifier(model), *args))
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        result = ("error", exc)
    with contextlib.suppress(BrokenPipeError):  # the parent stopped waiting
        try:
            send.send(result)
        except (pickle.PicklingError, TypeError, AttributeError):  # an exception that does not pickle
            send.send(("error", RuntimeError(f"{type(result[1]).__name__}: {result[1]}")))


class Child:
    """One job in a child process that the parent stops at the deadline."""

    def __init__(self, context, model: str, job: Callable, args: tuple):
        self.receive, send = context.Pipe(duplex=False)
        self.process = context.Process(target=work_in_child, args=(send, model, job, args), name=f"search {job.__name__}")
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.cancelled = False
        self.failed: BaseException | None = None
        # The first start waits while the fork server imports torch (seconds): in a thread, so the deadline holds.
        threading.Thread(target=self.start, args=(send,), daemon=True).start()

    def start(self, send) -> None:
        try:
            self.process.start()
        except BaseException as exc:  # noqa: BLE001 - result() raises it
            self.failed = exc
        finally:
            send.close()  # the child holds its own end: the parent sees EOF if it dies
            with self.lock:
                self.started.set()
                if self.cancelled and self.failed is None:
                    self.process.kill()
                    self.process.join()

    def result(self, deadline: float) -> tuple[str, Any]:
        """("done", what the job returned), ("stopped", None) at the deadline, or ("died", exit code)."""
        kind, value, grace = "stopped", None, 0.0
        try:
            if self.started.wait(max(0.0, deadline - time.monotonic())):
                if self.failed is not None:
                    raise self.failed
                if self.receive.poll(max(0.0, deadline - time.monotonic())):
                    try:
                        (kind, value), grace = self.receive.recv(), GRACE
                    except EOFError:
                        kind = "died"
        finally:
            self.stop(grace)
        if kind == "error":
            raise value
        return kind, self.process.exitcode if kind == "died" else value

    def stop(self, grace: float = 0.0) -> None:
        """Kill the child unless it exits within `grace` seconds (it may, once it has sent its result)."""
        with self.lock:
            self.cancelled = True
            if self.started.is_set() and self.failed is None:
                self.process.join(grace)
                if self.process.is_alive():
                    self.process.kill()
                self.process.join()
        self.receive.close()


class Workers:
    """Where the fp32 export and the candidates are built and measured: in this process, or,
    with a deadline, each in a child process stopped at the deadline."""

    def __init__(self, model: str, deadline: float | None):
        self.model, self.deadline = model, deadline
        self.classifier = None
        if deadline is not None:
            # Not fork: torch's OpenMP threads do not survive a fork once this process has computed
            # (a child then hangs in its first parallel op). A fork server never computes.
            methods = multiprocessing.get_all_start_methods()
            self.context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if self.context.get_start_method() == "forkserver":
                self.context.set_forkserver_preload(list(CHILD_MODULES))

    def run(self, job: Callable, *args) -> tuple[str, Any]:
        """("done", what `job(classifier, *args)` returned), ("stopped", None) or ("died", exit code)."""
        if self.deadline is None:
            if self.classifier is None:
                from compressor.checkpoint import load_classifier

                self.classifier = load_classifier(self.model)
            return "done", job(self.classifier, *args)
        return Child(self.context, self.model, job, args).result(self.deadline)


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


def time_left(started: float, spent: list[float], to_build: int, deadline: float | None) -> str:
    """`elapsed Xs, about Ys left`: the candidates still to build at the mean time of those built, within the budget."""
    now = time.monotonic()
    left = sum(spent) / len(spent) * to_build if spent else 0.0
    if deadline is not None:
        left = min(left, max(0.0, deadline - now))
    return f"elapsed {progress.seconds(now - started)}, about {progress.seconds(left)} left"


def search(model: str, name: str, out: Path, max_drop: float, data: Examples | None = None,
           calibration: list[TextInput] | None = None, objective: Objective = "size", batch: str = "mix",
           time_budget: float | None = None, threads: int | None = None,
           families: tuple[tuple[Step, ...], ...] | None = None, ladder: tuple[Step, ...] | None = None,
           runtimes_here: list[Runtime] | None = None, report: Callable[[str], None] | None = None,
           batch_dependent: bool = False, builder: Builder | None = None,
           min_speedup: float | None = None) -> tuple[Manifest, list[Attempt]]:
    """Search, write the winner as `out/name`, and return its manifest and the trail.

    `builder` stands in for compressor.pipeline.build (with a time budget it runs in a child
    process, so it must be importable by name)."""
    started = time.monotonic()
    deadline = None if time_budget is None else started + time_budget
    report = report or functools.partial(print, flush=True)  # a log shows each line as it comes
    check_inputs(model, name, out, max_drop, data, calibration, objective, batch, time_budget, min_speedup)
    steps = plan(objective, families, ladder)
    for family in steps:
        for method, quantize in family:
            check_recipe(Recipe("check", method, 1.0, quantize))

    held_out = None
    if data is None:
        calibration, held_out = held_out_split(calibration)
    threads = threads or os.cpu_count() or 1
    runtimes_here = runtimes_here or runtimes()
    workers = Workers(model, deadline)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".search-", dir=out))  # hidden: the service skips it
    try:
        scoring = Scoring(data.inputs() if data is not None else list(held_out),
                          data.labels if data is not None else None, "agreement", threads, PROFILES[batch],
                          batch_dependent=batch_dependent)
        kind, scoring = workers.run(measure_reference, builder, name, work / "fp32", scoring, calibration)
        if kind == "stopped":
            raise InputError(f"--time-budget {time_budget:g} s ran out before the fp32 export, which every "
                             "candidate is measured against, was built and measured; give the search more time")
        if kind == "died":
            raise RuntimeError(f"the process building the fp32 export died (exit code {scoring})")
        bound = scoring.reference_score - max_drop / 100
        report(f"fp32 export on onnxruntime/f32: "
               f"{metric_line(scoring.metric, scoring.reference_score, scoring.reference_ms)}; "
               f"a candidate holds at {scoring.metric} >= {bound:.4f}")
        report(f"runtimes here: {', '.join(r.label() for r in runtimes_here)}; batch profile {batch}; "
               f"objective {objective}" + (f"; time budget {time_budget:g} s" if time_budget is not None else "")
               + (f"; at least {min_speedup:g}x the fp32 export's speed" if min_speedup is not None else ""))

        def buildable(rest) -> int:
            return sum(1 for s in rest if skip_reason(s, calibration, batch_dependent) is None)

        trail: list[Attempt] = []
        winner: tuple[Attempt, Path] | None = None
        spent: list[float] = []  # seconds of each candidate built
        finished = False
        for f, family in enumerate(steps):
            for s, step in enumerate(family):
                reason = skip_reason(step, calibration, batch_dependent)
                folder, ran = work / f"step-{len(trail) + 1}", False
                if reason is not None:
                    attempts = [Attempt(*step, None, None, None, False, note=reason)]
                elif deadline is not None and time.monotonic() >= deadline:
                    attempts = [Attempt(*step, None, None, None, False, note="time budget spent")]
                    finished = True
                else:
                    begun, ran = time.monotonic(), True
                    kind, value = workers.run(try_recipe, builder, name, step, folder, scoring, bound,
                                              runtimes_here, calibration)
                    took = time.monotonic() - begun
                    spent.append(took)
                    if kind == "done":
                        attempts = [too_slow(attempt, min_speedup) for attempt in value]
                    else:
                        shutil.rmtree(folder, ignore_errors=True)
                        note = (f"{STOPPED} after {took:.0f} s" if kind == "stopped"
                                else f"{FAILED}: its process died (exit code {value})")
                        attempts = [Attempt(*step, None, None, None, False, seconds=round(took, 1), note=note)]
                        finished = kind == "stopped"
                trail += attempts
                for attempt in attempts:
                    report(attempt.line(scoring.metric))
                found = best(attempts, objective)
                if objective == "size":  # the first rung that holds wins; a miss goes on to the next, larger
                    goes_on = found is None
                else:  # a family is refined while it holds and is the fastest so far
                    goes_on = found is not None and (winner is None or found.speedup > winner[0].speedup)
                if found is not None and (objective == "size" or goes_on):
                    winner = (found, folder)
                finished = finished or (objective == "size" and winner is not None)
                if ran:
                    rest = [*(family[s + 1:] if goes_on else ()), *(x for later in steps[f + 1:] for x in later)]
                    report(time_left(started, spent, 0 if finished else buildable(rest), deadline))
                if finished or not goes_on:
                    break
            if finished:
                break
        if winner is None:  # nothing held (or the budget ran out first): the plain export
            attempt = Attempt("none", None, "onnxruntime/f32", read_manifest(work / "fp32" / name).onnx_bytes,
                              scoring.reference_score, True, scoring.reference_ms, 1.0,
                              {size: 1.0 for size in scoring.reference_ms}, parity=0.0, threads=threads)
            winner = (attempt, work / "fp32")
        chosen, folder = winner
        manifest = record(folder / name, chosen, scoring, objective, batch, max_drop, bound, trail,
                          time.monotonic() - started, time_budget, min_speedup)
        if (out / name).exists():
            (out / name).rename(work / "replaced")  # removed with the work folder
        (folder / name).rename(out / name)
        return manifest, trail
    finally:
        shutil.rmtree(work, ignore_errors=True)


def metric_line(metric: str, value: float, measured: dict[str, float]) -> str:
    times = ", ".join(f"batch {size} {ms:.2f} ms" for size, ms in measured.items())
    return f"{metric} {value:.4f}, {times}"


def record(folder: Path, chosen: Attempt, scoring: Scoring, objective: Objective, batch: str, max_drop: float,
           bound: float, trail: list[Attempt], seconds: float, time_budget: float | None = None,
           min_speedup: float | None = None) -> Manifest:
    """Write the runtime it won on, and the search that chose it, into the winner's manifest:
    figures measured already, so it takes no time."""
    backend, precision = chosen.runtime.split("/")
    manifest = read_manifest(folder)
    manifest.runtime = Runtime(backend=backend, precision=precision, threads=chosen.threads, speedup=chosen.speedup,
                               speedups=chosen.speedups, batch=batch, latency_ms=chosen.latency_ms,
                               parity_vs_onnxruntime=chosen.parity)
    if chosen.batch_variation is not None:  # measured on the runtime it won on, which may not be the export's
        manifest.batch_variation = chosen.batch_variation
        manifest.batch_invariant = chosen.batch_variation <= measure.INVARIANCE_LIMIT
    manifest.search = {
        "objective": objective, "batch": batch, "max_drop": max_drop, "metric": scoring.metric,
        "reference_score": round(scoring.reference_score, 4), "reference_latency_ms": scoring.reference_ms,
        **({"reference_onnx_bytes": read_manifest(scoring.reference_folder).onnx_bytes}
           if scoring.reference_folder is not None else {}),
        "bound": round(bound, 4), "score": round(chosen.score, 4), "seconds": round(seconds, 1),
        **({"time_budget": time_budget} if time_budget is not None else {}),
        **({"min_speedup": min_speedup} if min_speedup is not None else {}),
        "trail": [{k: v for k, v in asdict(a).items() if v not in (None, "", {})} for a in trail],
    }
    write_manifest(folder, manifest)
    return manifest
