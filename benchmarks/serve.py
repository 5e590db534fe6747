"""The service under load, on loopback, against the fine-tuned SST-2 teacher, driven by wrk.

    python benchmarks/serve.py [--shared ../shared] [--seconds 5] [--out benchmarks/results]
                               [--infinity-venv DIR]

Load comes from wrk (benchmarks/wrk.py), a compiled generator that leaves the cores to
the server; its Lua script rotates through the SST-2 dev sentences, one per request.
Each server runs alone with 2 threads. Measures:
(a) the request path at one connection: the service's p50 against a raw tokenize +
    `session.run` (or the OpenVINO backend's run) of the same sentences, in this process;
(b) per variant and runtime: throughput, p50, p99 at 1, 8, 32 and 64 connections, the
    variant's SST-2 dev accuracy, and a ceiling: the sentences per second its model alone
    computes at batch 32 over the same sentences (variant/measure.py's throughput);
(c) the same load on the do-it-yourself server (benchmarks/diy_server.py: FastAPI +
    transformers.pipeline on the same teacher) and, given `--infinity-venv` (a venv with
    `pip install "infinity-emb[all]"`), on infinity-emb serving Optimum's ONNX export of the
    teacher on ONNX Runtime;
(d) a cascade (int8, falling back to the fp32 original under a top-1 threshold) against
    both ends, on SST-2 dev: accuracy, fallback rate, mean latency;
(e) the thread budget: two variants under load at once (two wrk processes) with the
    default budget, two 1-thread runs at once, and an oversubscribed 2 × 2.
Prints tables and writes benchmarks/results/serve.json and serve.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import wrk
from common import Service, free_port, server, shared_paths, slimserve
from common import parser as common_parser

from compressor.data import label_ids, read_tsv
from compressor.evaluate import open_variant
from variant import measure
from variant.folder import Opened
from variant.manifest import ONNX_FILE, Runtime, read_manifest, write_manifest

CONNECTIONS = (1, 8, 32, 64)
CASCADE_THRESHOLD = 0.9
CLASSIFY = "/v1/models/{}/classify"
# (variant, recipe, runtime it is served with): the fp32 teacher on each runtime, then
# the int8 variants on the runtime each is calibrated for.
ROWS: tuple[tuple[str, str | None, Runtime], ...] = (
    ("original", None, Runtime()),
    ("original-1t", None, Runtime(threads=1)),  # one thread per run, two runs side by side
    ("original-ov-bf16", None, Runtime(backend="openvino", precision="bf16")),
    ("int8", "int8", Runtime()),
    ("int8-static", "int8-static", Runtime()),
    ("int8-nncf", "int8-nncf", Runtime(backend="openvino")),
)


def diy(teacher: Path) -> contextlib.AbstractContextManager[Service]:
    port = free_port()
    return server([sys.executable, "-m", "uvicorn", "benchmarks.diy_server:app", "--port", str(port),
                   "--log-level", "warning"], {"SLIMSERVE_DIY_MODEL": str(teacher)}, port)


def infinity(venv: Path, teacher: Path, work: Path) -> contextlib.AbstractContextManager[Service]:
    """infinity-emb from its own venv, serving Optimum's ONNX export of the teacher on ONNX
    Runtime (its `optimum` engine) at the same batch size of 32."""
    folder = work / "infinity-teacher"
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    if not (folder / ONNX_FILE).exists():
        subprocess.run([str(venv / "bin" / "optimum-cli"), "export", "onnx", "--model", str(teacher), "--task",
                        "text-classification", str(folder)], check=True, env=offline, capture_output=True)
        # The export leaves the tokenizer without a length limit; its warm-up sends longer texts.
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 512}))
    port = free_port()
    # The model id is relative, run from the export's folder: infinity-emb joins the id to the
    # ONNX file's name and Optimum looks that name up inside the id's folder again.
    return server([str(venv / "bin" / "infinity_emb"), "v2", "--model-id", "./", "--engine", "optimum",
                   "--device", "cpu", "--port", str(port), "--batch-size", "32", "--no-model-warmup"],
                  offline, port, ready="/health", cwd=folder)


def build_variants(teacher: Path, train: Path, models: Path) -> None:
    """One folder per row, each recording the runtime it is served with."""
    from compressor.checkpoint import load_classifier
    from compressor.pipeline import Recipe, build

    calibration = read_tsv(train).texts
    classifier = None
    for name, quantize, runtime in ROWS:
        folder = models / name
        if not (folder / ONNX_FILE).exists():
            if quantize is None and name != "original":
                shutil.copytree(models / "original", folder)
            else:
                classifier = classifier or load_classifier(str(teacher))
                build(classifier, Recipe(name, quantize=quantize), models, calibration)
        manifest = read_manifest(folder)
        manifest.name, manifest.runtime = name, runtime
        write_manifest(folder, manifest)


def gather(models: Path, names: list[str], folder: Path) -> Path:
    """A models folder holding only `names`, hard links to their files (the service refuses
    files that resolve outside its folder, so symbolic links would not do)."""
    shutil.rmtree(folder, ignore_errors=True)
    for name in names:
        shutil.copytree(models / name, folder / name, copy_function=os.link)
    return folder


def served_threads(runtime: Runtime) -> str:
    return f", {runtime.threads} thread per run" if runtime.threads == 1 else ""


def raw_p50_ms(variant: Opened, texts: list[str]) -> float:
    """Tokenize one sentence and run it, as the service does for one request; median."""
    return measure.latency(variant, texts, (1,), {1: len(texts)})[1]["p50"]


def ceiling_rps(variant: Opened, texts: list[str], batch: int = 32) -> float:
    """Sentences per second the model computes at `batch` texts a request with the cores
    busy (its runs side by side where it takes one thread a run), tokenizing included."""
    return round(batch * 1000 / measure.throughput(variant, texts, batch, len(texts) // batch), 1)


async def labelled(url: str, model: str, texts: list[str], clients: int) -> tuple[list[str], list[float]]:
    """Every text once, its label and latency (an accuracy measurement, not a load test)."""
    labels, latencies = [None] * len(texts), [0.0] * len(texts)
    queue = iter(range(len(texts)))

    async def worker(http: httpx.AsyncClient) -> None:
        for i in queue:
            start = time.perf_counter()
            response = await http.post(f"{url}{CLASSIFY.format(model)}", json={"inputs": [texts[i]]})
            latencies[i] = time.perf_counter() - start
            labels[i] = response.json()["predictions"][0]["label"]

    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    return labels, latencies


def table(title: str, rows: list[dict], columns: list[str]) -> str:
    lines = [title, "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def load_row(server_name: str, url: str, path: str, bodies: list[str], connections: int, seconds: float) -> dict:
    wrk.run(url, path, bodies, connections, 1)  # warm the connections and the batcher
    row = {"server": server_name, "connections": connections, **wrk.run(url, path, bodies, connections, seconds)}
    print(row, file=sys.stderr)
    return row


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=5, help="wrk duration per load point")
    parser.add_argument("--infinity-venv", type=Path, help="a venv with infinity-emb installed: adds it as a peer")
    args = parser.parse_args()
    if not wrk.available():
        print("benchmarks/serve.py: needs wrk on PATH (apt-get install wrk)", file=sys.stderr)
        sys.exit(2)
    teacher, train, dev = shared_paths(args.shared, "benchmarks/serve.py")
    models = args.out / "serve-models"
    build_variants(teacher, train, models)
    data = read_tsv(dev)
    texts = data.texts
    bodies = wrk.classify_bodies(texts)
    labels = read_manifest(models / "original").labels
    truth = np.array(label_ids(data.labels, labels))
    results: dict = {"wrk_seconds": args.seconds}

    # (a) the request path at one connection, and (b) every row under load
    overhead, load_rows, ceilings = [], [], []
    for name, _, runtime in ROWS:
        variant = open_variant(models / name, args.threads)
        runs_on = variant.backend.runtime.label()  # after any fallback (bf16 on a CPU without it runs f32)
        accuracy = float((measure.answers(variant, texts).argmax(-1) == truth).mean())
        raw = raw_p50_ms(variant, texts)
        ceilings.append({"variant": name, "runtime": runs_on, "accuracy": f"{accuracy:.2%}",
                         "ceiling_rps": ceiling_rps(variant, texts)})
        del variant
        with slimserve(gather(models, [name], args.out / "serve-work" / name)) as service:
            rows = [load_row(f"slimserve {name} ({runs_on}{served_threads(runtime)})", service.url,
                             CLASSIFY.format(name), bodies, c, args.seconds) for c in CONNECTIONS]
        overhead.append({"variant": name, "runtime": runs_on, "raw_p50_ms": round(raw, 2),
                         "service_p50_ms": rows[0]["p50_ms"], "ratio": round(rows[0]["p50_ms"] / raw, 2)})
        load_rows += rows
    with diy(teacher) as service:
        load_rows += [load_row("FastAPI + transformers.pipeline (fp32)", service.url, CLASSIFY.format("original"),
                               bodies, c, args.seconds) for c in CONNECTIONS]
    if args.infinity_venv is not None:
        peer = [json.dumps({"input": [t], "model": "./"}) for t in texts]
        with infinity(args.infinity_venv, teacher, args.out / "serve-work") as service:
            load_rows += [load_row("infinity-emb (Optimum ONNX, onnxruntime/f32)", service.url, "/classify", peer, c,
                                   args.seconds) for c in CONNECTIONS]
    else:
        print("benchmarks/serve.py: no --infinity-venv, so no infinity-emb rows", file=sys.stderr)
    results.update(overhead=overhead, ceilings=ceilings, load=load_rows)

    # (d) the cascade against both ends, on the whole dev set
    cascade_models = gather(models, ["original", "int8"], args.out / "serve-work" / "cascade")
    (cascade_models / "cascades.json").write_text(json.dumps(
        {"cascade": {"fast": "int8", "reference": "original", "threshold": CASCADE_THRESHOLD}}))
    cascade_rows = []
    gold = [labels[i] for i in truth]
    with slimserve(cascade_models) as service:
        for name in ("original", "int8", "cascade"):
            predicted, latencies = asyncio.run(labelled(service.url, name, texts, 4))
            cascade_rows.append({"model": name, "accuracy": f"{np.mean([p == g for p, g in zip(predicted, gold)]):.2%}",
                                 "mean_ms": round(float(np.mean(latencies)) * 1000, 2),
                                 "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2)})
        metrics = httpx.get(f"{service.url}/metrics").text
    fallbacks = next(float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith('slimserve_cascade_fallbacks_total{model="cascade"}'))
    cascade_rows[-1]["fallback_rate"] = f"{fallbacks / len(texts):.1%}"
    results["cascade"] = {"threshold": CASCADE_THRESHOLD, "rows": cascade_rows}

    # (e) the thread budget: original and int8 under load at the same time
    budget_rows = []
    for label, settings in (("2 threads, one run at a time (default)", {"threads": 2}),
                            ("1 thread per run, two at once", {"threads": 2, "intra_op_threads": 1}),
                            ("2 threads per run, two at once (oversubscribed)", {"threads": 4, "intra_op_threads": 2})):
        with slimserve(cascade_models, **settings) as service, ThreadPoolExecutor(2) as pool:
            both = [pool.submit(wrk.run, service.url, CLASSIFY.format(n), bodies, 8, args.seconds)
                    for n in ("original", "int8")]
            original, int8 = (f.result() for f in both)
        budget_rows.append({"budget": label, "throughput_rps": round(original["throughput_rps"] + int8["throughput_rps"], 1),
                            "original_p99_ms": original["p99_ms"], "int8_p99_ms": int8["p99_ms"]})
        print(budget_rows[-1], file=sys.stderr)
    results["thread_budget"] = budget_rows

    report = "\n\n".join([
        table("(a) one connection: service p50 against a raw tokenize + run of the same sentences", overhead,
              ["variant", "runtime", "raw_p50_ms", "service_p50_ms", "ratio"]),
        table("(b) accuracy on SST-2 dev, and the model alone at batch 32 (sentences/s)", ceilings,
              ["variant", "runtime", "accuracy", "ceiling_rps"]),
        table(f"(b, c) one-sentence requests from wrk, {args.seconds:g} s per point", load_rows,
              ["server", "connections", "throughput_rps", "p50_ms", "p99_ms", "non_2xx", "socket_errors"]),
        table(f"(d) cascade int8 → original below top-1 {CASCADE_THRESHOLD}, SST-2 dev, 4 clients", cascade_rows,
              ["model", "accuracy", "mean_ms", "p99_ms", "fallback_rate"]),
        table("(e) thread budget: original and int8 under load at once, 8 connections each", budget_rows,
              ["budget", "throughput_rps", "original_p99_ms", "int8_p99_ms"]),
    ])
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "serve.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
