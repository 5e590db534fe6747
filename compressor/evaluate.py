"""Measure exported variants through ONNX Runtime, the way the service runs them.

For each variant: its score on a labelled TSV (accuracy; for a regression head, the
Pearson correlation with the labels), agreement with a reference variant as its task
defines it (service/heads.py), latency of `session.run` at batch 1 and batch 32 (p50/p95; tokenizing
is the same for every variant, so it is left out to keep ratios sharp), parameters and
ONNX bytes. The figures on a data file are also recorded in the variant's manifest, under
that file's dataset key (`evaluations`): each dataset keeps its own, so evaluating on a
few made-up sentences never replaces the figures on a real dev set.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

from compressor.data import PARITY_SENTENCES, Examples, label_ids, read_tsv
from compressor.errors import InputError
from service import heads
from service.backend import open_backend
from service.cascade import (
    CASCADE_FILE,
    CascadeSpec,
    read_cascade_file,
    unsure,
)
from service.manifest import Evaluation, Task, read_manifest, timestamp, write_manifest
from service.repository import Variant, load_variant
from service.tokenization import TextInput, encode

BATCH = 32
Batch = TypeVar("Batch")  # what a timed run is handed: encoded arrays, or one encoding per cascade end
LATENCY_RUNS = {1: 200, BATCH: 30}
HASH_CHARS = 8  # of the data file's sha256 in its dataset key


def dataset_key(path: Path) -> str:
    """`dev.tsv@1f3a9c0b`: the file's name, for people, and the start of its content's
    sha256, so the same file evaluated again replaces its entry while an edited file, or
    another one of that name, gets its own."""
    return f"{path.name}@{hashlib.sha256(path.read_bytes()).hexdigest()[:HASH_CHARS]}"


def open_variant(folder: Path, threads: int) -> Variant:
    if not folder.is_dir():
        raise InputError(f"variant folder {folder} does not exist")
    variant = load_variant(folder, partial(open_backend, intra_op=threads))
    if variant.state != "ready":
        raise InputError(f"cannot load variant {folder}: {variant.reason}")
    return variant


def scores(variant: Variant, inputs: list[TextInput]) -> np.ndarray:
    """Scores [inputs, labels] as the service answers them (probabilities, per-label
    probabilities, or regression scores), batched by length so padding stays small."""
    order = sorted(range(len(inputs)), key=lambda i: len(str(inputs[i])))
    out = np.empty((len(inputs), len(variant.manifest.labels)))
    for start in range(0, len(inputs), BATCH):
        idx = order[start:start + BATCH]
        batch = encode(variant.tokenizer, [inputs[i] for i in idx])
        out[idx] = heads.activate(variant.manifest.task, variant.backend.run(batch.arrays).astype(np.float64))
    return out


def labelled_metric(task: Task) -> str:
    return "pearson" if task == "regression" else "accuracy"


def labelled_score(task: Task, scores: np.ndarray, cells: list[str], labels: list[str]) -> float:
    """How well `scores` match the data's labels. single_label: accuracy of the top-1.
    multi_label: the share of (input, label) decisions that match, a cell listing the
    input's labels by name or id, comma-separated (empty: none). regression: the Pearson
    correlation of the score with the numbers in the cells."""
    if task == "single_label":
        return float((scores.argmax(-1) == np.array(label_ids(cells, labels))).mean())
    if task == "multi_label":
        truth = np.zeros(scores.shape, dtype=bool)
        for row, cell in enumerate(cells):
            try:
                truth[row, label_ids([c.strip() for c in cell.split(",") if c.strip()], labels)] = True
            except InputError as exc:  # label_ids counts within the cell; name the data row
                raise InputError(f"data row {row + 1}: {exc}") from None
        return float((heads.decisions(task, scores) == truth).mean())
    try:
        values = np.array([float(c) for c in cells])
    except ValueError as exc:
        raise InputError(f"a regression model's labels are numbers: {exc}") from None
    return heads.correlation(scores[:, 0], values)


def latency_ms(run: Callable[[Batch], object], batches: list[Batch]) -> dict[str, float]:
    """p50/p95 of `run` over prepared batches (tokenizing is done before the clock starts)."""
    for batch in batches[:3]:  # warm up the arena and kernels
        run(batch)
    times = []
    for batch in batches:
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000)
    quantiles = statistics.quantiles(times, n=20)
    return {"p50": round(statistics.median(times), 3), "p95": round(quantiles[18], 3)}


def latencies(prepare: Callable[[list[TextInput]], Batch], run: Callable[[Batch], object],
              inputs: list[TextInput]) -> dict[str, dict[str, float]]:
    """Latency at each batch size of LATENCY_RUNS, on `inputs` taken in turn."""
    def batches(size: int, runs: int) -> list[Batch]:
        return [prepare([inputs[(i * size + j) % len(inputs)] for j in range(size)]) for i in range(runs)]
    return {f"batch_{b}": latency_ms(run, batches(b, runs)) for b, runs in LATENCY_RUNS.items()}


def evaluate(folder: Path, data: Examples | None, dataset: Path | None, reference: np.ndarray | None,
             reference_name: str | None, threads: int) -> dict:
    """`dataset`: the file `data` was read from; `reference`: the reference's scores on it."""
    variant = open_variant(folder, threads)
    manifest = variant.manifest
    result: dict = {"variant": variant.name, "method": manifest.method,
                    "quantize": manifest.settings.get("quantize"), "parameters": manifest.parameters,
                    "parameters_original": manifest.parameters_original,
                    "onnx_bytes": (folder / "model.onnx").stat().st_size}
    texts: list[TextInput] = data.inputs() if data else list(PARITY_SENTENCES)
    if data is not None:
        task = manifest.task
        mine = scores(variant, texts)
        result.update(dataset=dataset.name, examples=len(texts), task=task)
        if data.labels is not None:
            result[labelled_metric(task)] = round(labelled_score(task, mine, data.labels, manifest.labels), 4)
        if reference is not None:
            result.update(reference=reference_name,
                          **{k: round(v, 4) for k, v in heads.agreement(task, mine, reference).items()})
    result["latency_ms"] = latencies(lambda xs: encode(variant.tokenizer, xs).arrays, variant.backend.run, texts)
    if data is not None:
        manifest.evaluations[dataset_key(dataset)] = Evaluation(
            dataset=dataset.name, rows=len(texts), labelled=data.labels is not None, date=timestamp(),
            **{k: result[k] for k in ("accuracy", "pearson", "agreement", "mae", "reference", "latency_ms")
               if k in result})
        write_manifest(folder, manifest)
    return result


def evaluate_all(folders: list[Path], data_path: Path | None, reference: Path | None, threads: int,
                 text_col: str | None = None, pair_col: str | None = None, label_col: str | None = None,
                 cascades: bool = True) -> list[dict]:
    """One result per folder, then (with `cascades` and data) one per cascade declared
    beside them whose two ends are among the folders."""
    data = read_tsv(data_path, text_col, pair_col, label_col) if data_path else None
    reference_scores = None
    if reference is not None:
        if data is None:
            raise InputError("--reference needs --data: agreement is measured on its texts")
        reference_variant = open_variant(reference, threads)
        for folder in folders:
            problem = heads.mismatch(folder.name, head_of(folder), reference.name, head_of(reference))
            if problem is not None:
                raise InputError(f"--reference: {problem}")
        reference_scores = scores(reference_variant, data.inputs())
    results = [evaluate(f, data, data_path, reference_scores, reference.name if reference else None, threads)
               for f in folders]
    if cascades and data is not None:
        results += [evaluate_cascade(name, spec, folders, data, data_path, reference_scores, reference, threads)
                    for name, spec in cascades_over(folders).items()]
    return results


def head_of(folder: Path) -> tuple[Task, list[str]]:
    manifest = read_manifest(folder)
    return manifest.task, manifest.labels


def cascades_over(folders: list[Path]) -> dict[str, CascadeSpec]:
    """The cascades declared beside the evaluated folders whose two ends were evaluated too."""
    names = {f.resolve().name for f in folders}
    found: dict[str, CascadeSpec] = {}
    for models in {f.resolve().parent for f in folders}:
        try:
            specs = read_cascade_file(models)
        except (OSError, ValueError) as exc:
            raise InputError(f"{models / CASCADE_FILE}: {str(exc).splitlines()[0]}") from None
        found.update({n: s for n, s in specs.items() if {s.fast, s.reference} <= names})
    return found


def evaluate_cascade(name: str, spec: CascadeSpec, folders: list[Path], data: Examples, dataset: Path,
                     reference_scores: np.ndarray | None, reference: Path | None, threads: int) -> dict:
    """A cascade scored as the service runs it: the fast variant answers, and the inputs
    whose top-1 probability is under the threshold are answered by the reference. Its
    latency is measured the same way, so it includes the share that falls back."""
    by_name = {f.resolve().name: f for f in folders}
    fast, slow = open_variant(by_name[spec.fast], threads), open_variant(by_name[spec.reference], threads)
    texts = data.inputs()
    answered = scores(fast, texts)  # cascades are single-label (cascade.problem refuses others)
    fallback = unsure(answered, spec.threshold)
    answered[fallback] = scores(slow, [texts[i] for i in fallback])

    # Each end reads its own tokenizer's encoding; the reference gets the unsure rows of it.
    def prepare(batch: list[TextInput]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return encode(fast.tokenizer, batch).arrays, encode(slow.tokenizer, batch).arrays

    def run(batch: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]) -> None:
        fast_arrays, slow_arrays = batch
        rows = unsure(heads.softmax(fast.backend.run(fast_arrays).astype(np.float64)), spec.threshold)
        if rows.size:
            slow.backend.run({k: v[rows] for k, v in slow_arrays.items()})

    result: dict = {"variant": name, "method": f"cascade {spec.fast} → {spec.reference} < {spec.threshold:g}",
                    "quantize": None, "parameters": fast.manifest.parameters + slow.manifest.parameters,
                    "parameters_original": slow.manifest.parameters_original,
                    "onnx_bytes": sum((by_name[n] / "model.onnx").stat().st_size for n in (spec.fast, spec.reference)),
                    "dataset": dataset.name, "examples": len(texts), "fallback": round(fallback.size / len(texts), 4)}
    if data.labels is not None:
        result["accuracy"] = round(labelled_score("single_label", answered, data.labels, fast.manifest.labels), 4)
    if reference_scores is not None:
        result.update(reference=reference.name,
                      agreement=round(heads.agreement("single_label", answered, reference_scores)["agreement"], 4))
    result["latency_ms"] = latencies(prepare, run, texts)
    return result


def table(results: list[dict]) -> str:
    """A fixed-width table, one row per variant (and cascade). With the reference among
    the results, each row also says how it compares: accuracy points, times smaller, times
    faster at batch 1 and at batch 32 (p50 against p50)."""
    base = next((r for r in results if r["variant"] == r.get("reference")), None)
    head = ["variant", "method", "accuracy" if any("accuracy" in r for r in results) or
            not any("pearson" in r for r in results) else "pearson", "agreement", "params", "MB", "b1 p50 ms", f"b{BATCH} p50 ms"]
    if base:
        head += ["Δ points", "smaller", "faster b1", f"faster b{BATCH}"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    rows = [head]
    for r in results:
        b1, bn = r["latency_ms"]["batch_1"]["p50"], r["latency_ms"][f"batch_{BATCH}"]["p50"]
        row = [r["variant"], r["method"], fmt(r.get("accuracy", r.get("pearson"))), fmt(r.get("agreement")),
               f"{r['parameters'] / 1e6:.2f}M", f"{r['onnx_bytes'] / 1e6:.1f}", f"{b1:.2f}", f"{bn:.1f}"]
        if base:
            delta = (r["accuracy"] - base["accuracy"]) * 100 if "accuracy" in r and "accuracy" in base else None
            row += ["-" if delta is None else f"{delta:+.2f}", f"{base['onnx_bytes'] / r['onnx_bytes']:.2f}x",
                    f"{base['latency_ms']['batch_1']['p50'] / b1:.2f}x",
                    f"{base['latency_ms'][f'batch_{BATCH}']['p50'] / bn:.2f}x"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
