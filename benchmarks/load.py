"""Closed-loop HTTP load: N clients, each sending its next request when the last one answers.

    python benchmarks/load.py --url http://127.0.0.1:8000 [--models a,b] [--concurrency 4]
                              [--rate 0] [--duration 0] [--texts FILE]

Without --models it drives every ready model the service lists, in turn; --rate caps the
requests per second over all clients (0: as fast as answers come); --duration 0 runs until
stopped. Prints one summary line per model every 10 s. `benchmarks/serve.py` imports
`drive` for its measurements; the compose stack's `load` service runs this script.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

SAMPLE_TEXTS = [
    "it's a charming and often affecting journey.",
    "the plot is thin and the acting is wooden",
    "a quietly devastating film that lingers long after the credits",
    "I expected nothing and was still disappointed",
    "an engrossing, funny and surprisingly tender portrait of a family",
    "the jokes land about half the time, which is not enough",
]


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, seconds: float, status: int) -> None:
        self.latencies.append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def summary(self) -> dict:
        lat = np.array(self.latencies) * 1000
        ok = self.statuses.get(200, 0)
        return {"requests": len(lat), "ok": ok, "errors": len(lat) - ok,
                "throughput_rps": round(len(lat) / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
                "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None}


async def drive(url: str, model: str, texts: list[str], concurrency: int, requests: int,
                seconds: float = 0.0, rate: float = 0.0) -> Stats:
    """`concurrency` clients send one-text requests until `requests` are done (or `seconds` pass)."""
    stats = Stats()
    counter = itertools.count()
    source = itertools.cycle(texts)
    interval = concurrency / rate if rate > 0 else 0.0
    start = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(http: httpx.AsyncClient) -> None:
        while True:
            i = next(counter)
            if (requests and i >= requests) or (seconds and time.perf_counter() - start > seconds):
                return
            sent = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/models/{model}/classify", json={"inputs": [next(source)]})
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            stats.add(time.perf_counter() - sent, status)
            if interval:
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - sent)))

    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    stats.seconds = time.perf_counter() - start
    return stats


def read_texts(path: Path | None) -> list[str]:
    if path is None:
        return SAMPLE_TEXTS
    lines = [line.split("\t")[0].strip() for line in path.read_text("utf-8").splitlines()[1:]]
    return [line for line in lines if line] or SAMPLE_TEXTS


async def steady(url: str, models: list[str] | None, texts: list[str], concurrency: int, rate: float,
                 duration: float) -> None:
    start = time.perf_counter()
    while not duration or time.perf_counter() - start < duration:
        names = models
        if not names:
            async with httpx.AsyncClient(timeout=10) as http:
                try:
                    listed = (await http.get(f"{url}/v1/models")).json()["models"]
                except (httpx.HTTPError, ValueError, KeyError):
                    await asyncio.sleep(2)
                    continue
            names = [m["name"] for m in listed if m["state"] == "ready"]
        for name in names:
            stats = await drive(url, name, texts, concurrency, 0, seconds=10 / max(1, len(names)), rate=rate)
            print(f"{name}: {stats.summary()}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--models", default="", help="comma-separated; default every ready model")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rate", type=float, default=0.0, help="requests per second over all clients; 0: unlimited")
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0: until stopped")
    p.add_argument("--texts", type=Path, help="a TSV whose first column is text (header skipped)")
    args = p.parse_args()
    if args.concurrency < 1 or args.rate < 0 or args.duration < 0:
        print("load.py: --concurrency must be ≥ 1, --rate and --duration ≥ 0", file=sys.stderr)
        sys.exit(2)
    models = [m for m in args.models.split(",") if m] or None
    try:
        asyncio.run(steady(args.url, models, read_texts(args.texts), args.concurrency, args.rate, args.duration))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
