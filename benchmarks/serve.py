"""The service under load, on loopback, against the fine-tuned SST-2 teacher.

    python benchmarks/serve.py [--shared ../shared] [--requests 300] [--out benchmarks/results]

Measures, each with a fresh server process on 2 threads:
(a) HTTP overhead: the service's p50 at batch 1 against a direct `session.run` of the
    same variant on the same inputs;
(b) throughput, p50 and p99 with 1, 8 and 32 closed-loop clients, dynamic batching on
    and off;
(c) the same load on the do-it-yourself baseline (benchmarks/diy_server.py: FastAPI +
    transformers.pipeline on the same teacher);
(d) a cascade (int8, falling back to the fp32 original under a top-1 threshold) against
    both ends, on SST-2 dev: accuracy, fallback rate, mean latency;
(e) the thread budget: two variants under load at once with the default budget (one
    2-thread run at a time), two 1-thread runs at once, and an oversubscribed 2 × 2.
Bounded in requests; prints tables and writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from common import Service, free_port, server, shared_paths, slimserve
from common import parser as common_parser
from load import drive

from compressor.data import label_ids, read_tsv
from service.backend import OrtBackend
from service.manifest import ONNX_FILE, TOKENIZER_FILE, read_manifest
from service.tokenization import encode, load_tokenizer

CLIENTS = (1, 8, 32)
CASCADE_THRESHOLD = 0.9


def diy(teacher: Path) -> contextlib.AbstractContextManager[Service]:
    port = free_port()
    return server([sys.executable, "-m", "uvicorn", "benchmarks.diy_server:app", "--port", str(port),
                   "--log-level", "warning"], {"SLIMSERVE_DIY_MODEL": str(teacher)}, port)


def build_variants(teacher: Path, models: Path) -> None:
    from compressor.checkpoint import load_classifier
    from compressor.pipeline import Recipe, build

    if all((models / n / ONNX_FILE).exists() for n in ("original", "int8")):
        return
    classifier = load_classifier(str(teacher))
    build(classifier, Recipe("original"), models)
    build(classifier, Recipe("int8", quantize="int8"), models)


def direct_p50(folder: Path, texts: list[str], runs: int) -> float:
    backend = OrtBackend(folder / ONNX_FILE, intra_op=2)
    tokenizer = load_tokenizer(folder / TOKENIZER_FILE, 256)
    batches = [encode(tokenizer, [t]).arrays for t in texts[:runs]]
    for arrays in batches[:20]:
        backend.run(arrays)
    times = []
    for arrays in batches:
        start = time.perf_counter()
        backend.run(arrays)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def load(url: str, model: str, texts: list[str], clients: int, requests: int) -> dict:
    asyncio.run(drive(url, [model], texts, clients, 40))  # warm the connection pool and caches
    return asyncio.run(drive(url, [model], texts, clients, requests)).summary()


async def labelled(url: str, model: str, texts: list[str], clients: int) -> tuple[list[str], list[float]]:
    labels, latencies = [None] * len(texts), [0.0] * len(texts)
    queue = iter(range(len(texts)))

    async def worker(http: httpx.AsyncClient) -> None:
        for i in queue:
            start = time.perf_counter()
            response = await http.post(f"{url}/v1/models/{model}/classify", json={"inputs": [texts[i]]})
            latencies[i] = time.perf_counter() - start
            labels[i] = response.json()["predictions"][0]["label"]

    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    return labels, latencies


def table(title: str, rows: list[dict], columns: list[str]) -> str:
    lines = [title, "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--requests", type=int, default=300, help="requests per load point")
    args = parser.parse_args()
    teacher, _, dev = shared_paths(args.shared, "benchmarks/serve.py")
    models = args.out / "serve-models"
    build_variants(teacher, models)
    data = read_tsv(dev)
    texts = data.texts
    results: dict = {}

    # (a) overhead and (b) batching on/off
    one = args.out / "serve-original-only"
    one.mkdir(parents=True, exist_ok=True)
    if not (one / "original").exists():
        os.symlink((models / "original").resolve(), one / "original")
    direct = direct_p50(models / "original", texts, 200)
    load_rows = []
    for batching in (True, False):
        with slimserve(one, batching=batching) as service:
            url = service.url
            if batching:
                single = load(url, "original", texts, 1, 200)
                results["overhead"] = {"direct_p50_ms": round(direct, 2), "service_p50_ms": single["p50_ms"],
                                       "overhead_ms": round(single["p50_ms"] - direct, 2),
                                       "ratio": round(single["p50_ms"] / direct, 2)}
            for clients in CLIENTS:
                row = load(url, "original", texts, clients, args.requests)
                load_rows.append({"server": f"slimserve, batching {'on' if batching else 'off'}",
                                  "clients": clients, **row})
                print(load_rows[-1], file=sys.stderr)
    # (c) the do-it-yourself baseline
    with diy(teacher) as service:
        url = service.url
        for clients in CLIENTS:
            row = load(url, "original", texts, clients, args.requests)
            load_rows.append({"server": "FastAPI + transformers.pipeline", "clients": clients, **row})
            print(load_rows[-1], file=sys.stderr)
    results["load"] = load_rows

    # (d) the cascade against both ends, on the whole dev set
    (models / "cascades.json").write_text(json.dumps(
        {"cascade": {"fast": "int8", "reference": "original", "threshold": CASCADE_THRESHOLD}}))
    cascade_rows = []
    names = read_manifest(models / "original").labels
    gold = [names[i] for i in label_ids(data.labels, names)]
    with slimserve(models, warmup=True) as service:
        url = service.url
        for name in ("original", "int8", "cascade"):
            predicted, latencies = asyncio.run(labelled(url, name, texts, 4))
            cascade_rows.append({"model": name, "accuracy": f"{np.mean([p == g for p, g in zip(predicted, gold)]):.2%}",
                                 "mean_ms": round(float(np.mean(latencies)) * 1000, 2),
                                 "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2)})
        metrics = httpx.get(f"{url}/metrics").text
    fallbacks = next(float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith('slimserve_cascade_fallbacks_total{model="cascade"}'))
    cascade_rows[-1]["fallback_rate"] = f"{fallbacks / len(texts):.1%}"
    results["cascade"] = {"threshold": CASCADE_THRESHOLD, "rows": cascade_rows}

    # (e) the thread budget: original and int8 under load at the same time
    budget_rows = []
    for label, settings in (("2 threads, one run at a time (default)", {"threads": 2}),
                            ("1 thread per run, two at once", {"threads": 2, "intra_op_threads": 1}),
                            ("2 threads per run, two at once (oversubscribed)", {"threads": 4, "intra_op_threads": 2})):
        with slimserve(models, **settings) as service:
            url = service.url
            async def both(url=url):
                return await asyncio.gather(*(drive(url, [n], texts, 8, args.requests) for n in ("original", "int8")))

            asyncio.run(drive(url, ["int8"], texts, 8, 40))
            stats = asyncio.run(both())
        merged = [s.summary() for s in stats]
        seconds = max(s.seconds for s in stats)
        budget_rows.append({"budget": label, "throughput_rps": round(sum(s["requests"] for s in merged) / seconds, 1),
                            "original_p99_ms": merged[0]["p99_ms"], "int8_p99_ms": merged[1]["p99_ms"]})
        print(budget_rows[-1], file=sys.stderr)
    results["thread_budget"] = budget_rows

    report = "\n\n".join([
        table("(a) HTTP overhead at batch 1 (fp32 teacher)", [results["overhead"]],
              ["direct_p50_ms", "service_p50_ms", "overhead_ms", "ratio"]),
        table("(b, c) one-text requests, closed-loop clients", load_rows,
              ["server", "clients", "throughput_rps", "p50_ms", "p99_ms", "errors"]),
        table(f"(d) cascade int8 → original below top-1 {CASCADE_THRESHOLD}, SST-2 dev, 4 clients", cascade_rows,
              ["model", "accuracy", "mean_ms", "p99_ms", "fallback_rate"]),
        table("(e) thread budget: original and int8 under load at once, 8 clients each", budget_rows,
              ["budget", "throughput_rps", "original_p99_ms", "int8_p99_ms"]),
    ])
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "serve.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
