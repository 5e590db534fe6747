"""Answers that do not depend on the batch, and the padding the batcher pays, measured
through the service on loopback.

    python benchmarks/invariance.py [--models models] [--data compressor/default/sst2-dev.tsv]
                                    [--seconds 10] [--out benchmarks/results]

Needs a models folder (`make variants` builds the default set) and wrk; reads only the
SST-2 dev set the project ships, so it needs nothing from ../shared.
(a) Batch invariance: every dev sentence of every ready variant sent alone, one request
    at a time (a run of one row, unpadded), then again in requests of 8 and of 32
    shuffled sentences of mixed lengths sent by 4 clients at once (runs of many rows,
    padded, sharing runs across requests); the largest |Δ probability| per variant.
(b) Padding: wrk at 1 and 32 connections on each variant, one dev sentence per request,
    and the padded share of token slots the service reports over that load
    (slimserve_token_slots_total: padding / (real + padding)).
Prints a table and writes benchmarks/results/invariance.json.
"""

from __future__ import annotations

import asyncio
import json
import platform
import random
import subprocess
import sys
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import wrk
from common import ROOT, slimserve

from compressor.data import read_tsv

CLIENTS = 4  # concurrent clients in the "together" phase, so runs mix requests
SIZES = (8, 32)
CONNECTIONS = (1, 32)
CLASSIFY = "/v1/models/{}/classify"


def cpu_name() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def probabilities(prediction: dict, labels: list[str]) -> list[float]:
    return [prediction["scores"][label] for label in labels]


async def alone(http: httpx.AsyncClient, model: str, texts: list[str], labels: list[str]) -> np.ndarray:
    rows = []
    for text in texts:
        answer = (await http.post(CLASSIFY.format(model), json={"inputs": [text]})).json()
        rows.append(probabilities(answer["predictions"][0], labels))
    return np.array(rows)


async def together(http: httpx.AsyncClient, model: str, texts: list[str], labels: list[str], size: int,
                   seed: int) -> np.ndarray:
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    requests = [order[i:i + size] for i in range(0, len(order), size)]
    out = np.zeros((len(texts), len(labels)))

    async def client(mine: list[list[int]]) -> None:
        for idx in mine:
            answer = (await http.post(CLASSIFY.format(model), json={"inputs": [texts[i] for i in idx]})).json()
            for i, prediction in zip(idx, answer["predictions"]):
                out[i] = probabilities(prediction, labels)

    await asyncio.gather(*(client(requests[k::CLIENTS]) for k in range(CLIENTS)))
    return out


async def invariance(url: str, texts: list[str]) -> dict[str, dict]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        models = [m for m in (await http.get("/v1/models")).json()["models"] if m["state"] == "ready" and m["manifest"]]
        results = {}
        for entry in models:
            name, labels = entry["name"], entry["manifest"]["labels"]
            base = await alone(http, name, texts, labels)
            worst = {f"batch_{size}": float(np.abs(await together(http, name, texts, labels, size, size) - base).max())
                     for size in SIZES}
            results[name] = {"sentences": len(texts), "max_abs_dp": worst,
                             "recorded_batch_invariant": entry["manifest"].get("batch_invariant", True)}
            print(f"{name:<16} {worst}", flush=True)
        return results


def token_slots(url: str, model: str) -> dict[str, float]:
    counts = {"real": 0.0, "padding": 0.0}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("slimserve_token_slots_total{") and f'model="{model}"' in line:
            kind = line.split('kind="')[1].split('"')[0]
            counts[kind] = float(line.rsplit(" ", 1)[1])
    return counts


def padding(url: str, models: list[str], texts: list[str], seconds: float) -> list[dict]:
    bodies = wrk.classify_bodies(texts)
    rows = []
    for model in models:
        for connections in CONNECTIONS:
            before = token_slots(url, model)
            load = wrk.run(url, CLASSIFY.format(model), bodies, connections, seconds)
            after = token_slots(url, model)
            real, pad = (after[k] - before[k] for k in ("real", "padding"))
            rows.append({"model": model, "connections": connections, "throughput_rps": load["throughput_rps"],
                         "padded_share": round(pad / (real + pad), 4) if real + pad else None})
            print(f"{model:<16} c={connections:<3} {load['throughput_rps']:8.1f} req/s  "
                  f"padded share {rows[-1]['padded_share']}", flush=True)
    return rows


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--data", type=Path, default=ROOT / "compressor" / "default" / "sst2-dev.tsv")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if not wrk.available():
        sys.exit("benchmarks/invariance.py: wrk is not installed (apt-get install wrk)")
    texts = read_tsv(args.data).texts
    with slimserve(args.models) as service:
        found = asyncio.run(invariance(service.url, texts))
        rows = padding(service.url, list(found), texts, args.seconds)
    # Where and when it ran goes in runs.json (its `machines` names each CPU once).
    print(f"measured on {cpu_name()}, 2 threads, {date.today().isoformat()}", flush=True)
    result = {"data": args.data.name, "invariance": found, "padding": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "invariance.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
