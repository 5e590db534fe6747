"""Measure exported variants through ONNX Runtime, the way the service runs them.

For each variant: accuracy on a labelled TSV, agreement of its top-1 predictions with a
reference variant, latency of `session.run` at batch 1 and batch 32 (p50/p95; tokenizing
is the same for every variant, so it is left out to keep ratios sharp), parameters and
ONNX bytes. The figures on a data file are also recorded in the variant's manifest, under
that file's dataset key (`evaluations`): each dataset keeps its own, so evaluating on a
few made-up sentences never replaces the figures on a real dev set.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path

import numpy as np

from compressor.data import PARITY_SENTENCES, Examples, label_ids, read_tsv
from compressor.errors import InputError
from service.manifest import Evaluation, timestamp, write_manifest
from service.repository import Variant, load_variant
from service.tokenization import TextInput, encode

BATCH = 32
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
    variant = load_variant(folder, intra_op=threads, limiter=None)
    if variant.state != "ready":
        raise InputError(f"cannot load variant {folder}: {variant.reason}")
    return variant


def predict(variant: Variant, inputs: list[TextInput]) -> np.ndarray:
    """Top-1 class ids, batched by length so padding stays small."""
    order = sorted(range(len(inputs)), key=lambda i: len(str(inputs[i])))
    out = np.empty(len(inputs), dtype=np.int64)
    for start in range(0, len(inputs), BATCH):
        idx = order[start:start + BATCH]
        batch = encode(variant.tokenizer, [inputs[i] for i in idx])
        out[idx] = variant.backend.run(batch.arrays).argmax(-1)
    return out


def latency_ms(variant: Variant, inputs: list[TextInput], batch_size: int, runs: int) -> dict[str, float]:
    batches = [encode(variant.tokenizer, [inputs[(i * batch_size + j) % len(inputs)] for j in range(batch_size)])
               for i in range(runs)]
    for batch in batches[:3]:  # warm up the arena and kernels
        variant.backend.run(batch.arrays)
    times = []
    for batch in batches:
        start = time.perf_counter()
        variant.backend.run(batch.arrays)
        times.append((time.perf_counter() - start) * 1000)
    quantiles = statistics.quantiles(times, n=20)
    return {"p50": round(statistics.median(times), 3), "p95": round(quantiles[18], 3)}


def evaluate(folder: Path, data: Examples | None, dataset: Path | None, reference: np.ndarray | None,
             reference_name: str | None, threads: int) -> dict:
    """`dataset`: the file `data` was read from."""
    variant = open_variant(folder, threads)
    manifest = variant.manifest
    result: dict = {"variant": variant.name, "method": manifest.method,
                    "quantize": manifest.settings.get("quantize"), "parameters": manifest.parameters,
                    "parameters_original": manifest.parameters_original,
                    "onnx_bytes": (folder / "model.onnx").stat().st_size}
    texts: list[TextInput] = data.inputs() if data else list(PARITY_SENTENCES)
    if data is not None:
        predicted = predict(variant, texts)
        result.update(dataset=dataset.name, examples=len(texts))
        if data.labels is not None:
            result["accuracy"] = round(float((predicted == np.array(label_ids(data.labels, manifest.labels))).mean()), 4)
        if reference is not None:
            result.update(reference=reference_name, agreement=round(float((predicted == reference).mean()), 4))
    result["latency_ms"] = {f"batch_{b}": latency_ms(variant, texts, b, runs) for b, runs in LATENCY_RUNS.items()}
    if data is not None:
        manifest.evaluations[dataset_key(dataset)] = Evaluation(
            dataset=dataset.name, rows=len(texts), labelled=data.labels is not None, date=timestamp(),
            **{k: result[k] for k in ("accuracy", "agreement", "reference", "latency_ms") if k in result})
        write_manifest(folder, manifest)
    return result


def evaluate_all(folders: list[Path], data_path: Path | None, reference: Path | None, threads: int,
                 text_col: str | None = None, pair_col: str | None = None, label_col: str | None = None) -> list[dict]:
    data = read_tsv(data_path, text_col, pair_col, label_col) if data_path else None
    reference_ids = None
    if reference is not None:
        if data is None:
            raise InputError("--reference needs --data: agreement is measured on its texts")
        reference_ids = predict(open_variant(reference, threads), data.inputs())
    return [evaluate(f, data, data_path, reference_ids, reference.name if reference else None, threads) for f in folders]


def table(results: list[dict]) -> str:
    """A fixed-width table, one row per variant."""
    head = ["variant", "method", "quant", "accuracy", "agreement", "b1 p50 ms", "b1 p95 ms",
            "b32 p50 ms", "b32 p95 ms", "params", "MB"]
    rows = [head]
    for r in results:
        lat = r["latency_ms"]
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        rows.append([r["variant"], r["method"], r["quantize"] or "-", fmt(r.get("accuracy")), fmt(r.get("agreement")),
                     f"{lat['batch_1']['p50']:.2f}", f"{lat['batch_1']['p95']:.2f}",
                     f"{lat[f'batch_{BATCH}']['p50']:.1f}", f"{lat[f'batch_{BATCH}']['p95']:.1f}",
                     f"{r['parameters'] / 1e6:.2f}M", f"{r['onnx_bytes'] / 1e6:.1f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
