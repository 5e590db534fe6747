"""The teacher's variants on the GPU providers, against the CPU: parity, accuracy, speed.

    python benchmarks/gpu.py MODELS [--shared ../shared] [--out benchmarks/results]

For every variant folder under MODELS and every provider row this ONNX Runtime can run
(cpu, cuda, tensorrt; a row it cannot run is reported, not measured): the provider that
actually runs it, the largest |logit difference| against the CPU on SST-2 dev, accuracy
on SST-2 dev, and the median time of a run at batch 1 and 32 over the dev sentences
(tokenized beforehand). scripts/gpu-check.sh runs it on a machine with an NVIDIA GPU.
Writes benchmarks/results/gpu.json and prints the table.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import parser as common_parser

from compressor.data import label_ids, read_tsv
from variant.backends.ort import OrtBackend
from variant.backends.providers import EXECUTION_PROVIDERS
from variant.manifest import ONNX_FILE, TOKENIZER_FILE, read_manifest
from variant.tokenization import encode, load_tokenizer

BATCHES = {1: 100, 32: 20}  # timed runs per batch size


def median_ms(backend: OrtBackend, batches: list[dict[str, np.ndarray]]) -> float:
    for arrays in batches[:3]:  # TensorRT builds an engine per new shape: not timed
        backend.run(arrays)
    times = []
    for arrays in batches:
        start = time.perf_counter()
        backend.run(arrays)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 3)


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("models", type=Path)
    args = parser.parse_args()
    dev = args.shared / "data" / "sst2" / "dev.tsv"
    if not dev.exists():
        print(f"benchmarks/gpu.py: needs {dev}", file=sys.stderr)
        sys.exit(2)
    data = read_tsv(dev)
    rows = []
    for folder in sorted(p for p in args.models.iterdir() if (p / ONNX_FILE).exists()):
        manifest = read_manifest(folder)
        tokenizer = load_tokenizer(folder / TOKENIZER_FILE, manifest.max_length)
        truth = np.array(label_ids(data.labels, manifest.labels))
        order = np.argsort([len(t) for t in data.texts])
        chunks = [order[i:i + 32] for i in range(0, len(order), 32)]
        feeds = [encode(tokenizer, [data.texts[i] for i in chunk]).arrays for chunk in chunks]
        singles = [encode(tokenizer, [t]).arrays for t in data.texts[:BATCHES[1]]]
        full = [f for f in feeds if len(f["input_ids"]) == 32][:BATCHES[32]]
        reference = None
        for name, row in EXECUTION_PROVIDERS.items():
            if row.preferred not in ort.get_available_providers():
                rows.append({"variant": folder.name, "provider": name, "note": f"{row.preferred} not in this build"})
                continue
            backend = OrtBackend(folder / ONNX_FILE, threads=2, provider=name)
            logits = np.empty((len(data.texts), len(manifest.labels)), dtype=np.float32)
            for chunk, arrays in zip(chunks, feeds):
                logits[chunk] = backend.run(arrays)
            if reference is None:
                reference = logits
            rows.append({"variant": folder.name, "provider": name, "runs_on": backend.provider,
                         "accuracy": round(float((logits.argmax(1) == truth).mean()), 4),
                         "max_logit_diff_vs_cpu": round(float(np.abs(logits - reference).max()), 5),
                         "batch_1_ms": median_ms(backend, singles), "batch_32_ms": median_ms(backend, full)})
            print(rows[-1], file=sys.stderr)
    columns = ["variant", "provider", "runs_on", "accuracy", "max_logit_diff_vs_cpu", "batch_1_ms", "batch_32_ms",
               "note"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps({"onnxruntime": ort.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
