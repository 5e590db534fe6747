"""Measure exported variants the way the service runs them (variant/measure.py).

For each variant: its score on a labelled TSV (accuracy; for a regression head, the
Pearson correlation with the labels), agreement with a reference variant as its task
defines it (variant/heads.py), the latency of a request of 1 and of 32 texts (p50/p95;
tokenizing, padding and the run on the runtime its manifest records, as the service
makes them), the runtime, parameters and ONNX bytes. The figures on a data file are also recorded in the variant's manifest, under
that file's dataset key (`evaluations`): each dataset keeps its own, so evaluating on a
few made-up sentences never replaces the figures on a real dev set.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from compressor.data import PARITY_SENTENCES, Examples, label_ids, read_tsv
from compressor.errors import InputError
from variant import cascade, heads, measure
from variant.cascade import CASCADE_FILE, CascadeSpec, read_cascade_file
from variant.folder import Opened, open_on
from variant.heads import Task
from variant.manifest import (
    Evaluation,
    Manifest,
    read_manifest,
    timestamp,
    write_manifest,
)
from variant.tokenization import TextInput

BATCH = 32
LATENCY_RUNS = {1: 200, BATCH: 30}
HASH_CHARS = 8  # of the data file's sha256 in its dataset key


def dataset_key(path: Path) -> str:
    """`dev.tsv@1f3a9c0b`: the file's name, for people, and the start of its content's
    sha256, so the same file evaluated again replaces its entry while an edited file, or
    another one of that name, gets its own."""
    return f"{path.name}@{hashlib.sha256(path.read_bytes()).hexdigest()[:HASH_CHARS]}"


def manifest_of(folder: Path) -> Manifest:
    if not folder.is_dir():
        raise InputError(f"variant folder {folder} does not exist")
    try:
        return read_manifest(folder)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load variant {folder}: {str(exc).splitlines()[0]}") from None


def open_variant(folder: Path, threads: int) -> Opened:
    """The variant on its recorded runtime, with the threads per run it records (within
    `threads`, the budget) as the service runs it."""
    per_run = min(manifest_of(folder).runtime.threads or threads, threads)
    try:
        return open_on(folder, threads=per_run, parallel=threads // per_run)
    except Exception as exc:  # noqa: BLE001 - any fault of the folder is the user's to fix, in one line
        raise InputError(f"cannot load variant {folder}: {str(exc).splitlines()[0]}") from None


def labelled_metric(task: Task) -> str:
    return heads.HEADS[task].metric


def labelled_score(task: Task, scores: np.ndarray, cells: list[str], labels: list[str]) -> float:
    """How well `scores` match the data's label cells: a label's name or id per input, a
    comma-separated list of them where the task has many labels per input (empty: none),
    or a number where the task has no labels (regression)."""
    head = heads.HEADS[task]
    if head.truth is None:
        try:
            values = [float(c) for c in cells]
        except ValueError as exc:
            raise InputError(f"a regression model's labels are numbers: {exc}") from None
        return heads.labelled_score(task, scores, values)
    if not head.many_labels:
        return heads.labelled_score(task, scores, [[i] for i in label_ids(cells, labels)])
    ids = []
    for row, cell in enumerate(cells):
        try:
            ids.append(label_ids([c.strip() for c in cell.split(",") if c.strip()], labels))
        except InputError as exc:  # label_ids counts within the cell; name the data row
            raise InputError(f"data row {row + 1}: {exc}") from None
    return heads.labelled_score(task, scores, ids)


def latencies(opened: Opened, inputs: list[TextInput]) -> dict[str, dict[str, float]]:
    return {f"batch_{size}": ms for size, ms in measure.latency(opened, inputs, tuple(LATENCY_RUNS),
                                                                 LATENCY_RUNS).items()}


def evaluate(folder: Path, data: Examples | None, dataset: Path | None, reference: np.ndarray | None,
             reference_name: str | None, threads: int) -> dict:
    """`dataset`: the file `data` was read from; `reference`: the reference's scores on it."""
    variant = open_variant(folder, threads)
    manifest = variant.manifest
    result: dict = {"variant": variant.name, "method": manifest.method, "runtime": variant.backend.runtime.label(),
                    "quantize": manifest.settings.get("quantize"), "parameters": manifest.parameters,
                    "parameters_original": manifest.parameters_original,
                    "onnx_bytes": (folder / "model.onnx").stat().st_size}
    texts: list[TextInput] = data.inputs() if data else list(PARITY_SENTENCES)
    if data is not None:
        task = manifest.task
        mine = measure.answers(variant, texts)
        result.update(dataset=dataset.name, examples=len(texts), task=task)
        if data.labels is not None:
            result[labelled_metric(task)] = round(labelled_score(task, mine, data.labels, manifest.labels), 4)
        if reference is not None:
            result.update(reference=reference_name,
                          **{k: round(v, 4) for k, v in heads.agreement(task, mine, reference).items()})
    result["latency_ms"] = latencies(variant, texts)
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
            problem = heads.comparable(folder.name, head_of(folder), reference.name, reference_variant.head)
            if problem is not None:
                raise InputError(f"--reference: {problem}")
        reference_scores = measure.answers(reference_variant, data.inputs())
    results = [evaluate(f, data, data_path, reference_scores, reference.name if reference else None, threads)
               for f in folders]
    if cascades and data is not None:
        results += [evaluate_cascade(name, spec, folders, data, data_path, reference_scores, reference, threads)
                    for name, spec in cascades_over(folders).items()]
    return results


def head_of(folder: Path) -> heads.Signature:
    manifest = manifest_of(folder)
    return manifest.task, tuple(manifest.labels)


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
    problem = cascade.unfit(name, spec, {spec.fast: fast.head, spec.reference: slow.head})
    if problem is not None:
        raise InputError(problem)
    texts = data.inputs()
    answered = measure.answers(fast, texts)
    fallback = cascade.unsure(answered, spec.threshold)
    answered = cascade.merge(answered, fallback, measure.answers(slow, [texts[i] for i in fallback]))

    def run(batch: list[TextInput]) -> None:
        rows = cascade.unsure(heads.activate(fast.task, measure.logits(fast, batch)), spec.threshold)
        if rows.size:
            measure.logits(slow, [batch[i] for i in rows])

    result: dict = {"variant": name, "method": f"cascade {spec.fast} → {spec.reference} < {spec.threshold:g}",
                    "runtime": f"{fast.backend.runtime.label()} → {slow.backend.runtime.label()}", "quantize": None, "parameters": fast.manifest.parameters + slow.manifest.parameters,
                    "parameters_original": slow.manifest.parameters_original,
                    "onnx_bytes": sum((by_name[n] / "model.onnx").stat().st_size for n in (spec.fast, spec.reference)),
                    "dataset": dataset.name, "examples": len(texts), "fallback": round(fallback.size / len(texts), 4)}
    if data.labels is not None:
        result["accuracy"] = round(labelled_score("single_label", answered, data.labels, fast.manifest.labels), 4)
    if reference_scores is not None:
        result.update(reference=reference.name,
                      agreement=round(heads.agreement("single_label", answered, reference_scores)["agreement"], 4))
    result["latency_ms"] = {}
    for size, runs in LATENCY_RUNS.items():
        batches = measure.groups(texts, size, runs)
        result["latency_ms"][f"batch_{size}"] = measure.time_runs(run, batches, measure.warm_set(fast, batches))
    return result


def table(results: list[dict]) -> str:
    """A fixed-width table, one row per variant (and cascade). With the reference among
    the results, each row also says how it compares: accuracy points, times smaller, times
    faster at batch 1 and at batch 32 (p50 against p50)."""
    base = next((r for r in results if r["variant"] == r.get("reference")), None)
    head = ["variant", "method", "runtime", "accuracy" if any("accuracy" in r for r in results) or
            not any("pearson" in r for r in results) else "pearson", "agreement", "params", "MB", "b1 p50 ms", f"b{BATCH} p50 ms"]
    if base:
        head += ["Δ points", "smaller", "faster b1", f"faster b{BATCH}"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    rows = [head]
    for r in results:
        b1, bn = r["latency_ms"]["batch_1"]["p50"], r["latency_ms"][f"batch_{BATCH}"]["p50"]
        row = [r["variant"], r["method"], r.get("runtime", "-"), fmt(r.get("accuracy", r.get("pearson"))), fmt(r.get("agreement")),
               f"{r['parameters'] / 1e6:.2f}M", f"{r['onnx_bytes'] / 1e6:.1f}", f"{b1:.2f}", f"{bn:.1f}"]
        if base:
            delta = (r["accuracy"] - base["accuracy"]) * 100 if "accuracy" in r and "accuracy" in base else None
            row += ["-" if delta is None else f"{delta:+.2f}", f"{base['onnx_bytes'] / r['onnx_bytes']:.2f}x",
                    f"{base['latency_ms']['batch_1']['p50'] / b1:.2f}x",
                    f"{base['latency_ms'][f'batch_{BATCH}']['p50'] / bn:.2f}x"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
