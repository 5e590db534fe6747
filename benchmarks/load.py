"""Closed-loop HTTP load: N clients, each sending its next request when the last one answers.

    python benchmarks/load.py --url http://127.0.0.1:8000 [--models a,b] [--concurrency 4]
                              [--rate 0] [--duration 0] [--texts FILE]
    python benchmarks/load.py --soak [--models-dir models] [--requests 20000] [--concurrency 64]

Steady mode (the compose stack's `load` service): without --models it drives every ready
model the service lists, in turn; --rate caps the requests per second over all clients
(0: as fast as answers come); --duration 0 runs until stopped. Prints one summary line
per model every 10 s. `benchmarks/serve.py` imports `drive` for its measurements.

Soak mode starts the service on loopback over --models-dir (default: the default variants
from `make variants`) with shadow sampling against `original`, sends --requests one-text
requests spread over every variant from --concurrency clients, and reports errors by
status, p50/p99, throughput and the server's resident memory at start, after the warm-up
tenth of the requests, and at the end. Bounded in count and time (--max-seconds); writes
benchmarks/results/soak.json. Targets: no errors but deliberate 429s, and RSS growth
after warm-up under 5%.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

# Steady mode runs alone in the compose `load` container, so this file imports nothing
# of the repository's at module level (soak mode does, inside the function).
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

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


async def drive(url: str, models: list[str], texts: list[str], concurrency: int, requests: int,
                seconds: float = 0.0, rate: float = 0.0) -> Stats:
    """`concurrency` clients send one-text requests, request i to models[i % len(models)],
    until `requests` are done (or `seconds` pass)."""
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
                model = models[i % len(models)]
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
            stats = await drive(url, [name], texts, concurrency, 0, seconds=10 / max(1, len(names)), rate=rate)
            print(f"{name}: {stats.summary()}", flush=True)


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def soak(models_dir: Path, texts: list[str], requests: int, concurrency: int, max_seconds: float, out: Path) -> int:
    from common import slimserve

    if not (models_dir / "original").is_dir():
        print(f"load.py: --soak needs the default variants in {models_dir} (run `make variants`)", file=sys.stderr)
        return 2
    with slimserve(models_dir, reference="original", shadow_rate=0.1, max_queue=256) as service:
        listed = httpx.get(f"{service.url}/v1/models").json()["models"]
        names = [m["name"] for m in listed if m["state"] == "ready" and m.get("cascade") is None]
        rss = {"start": resident_mb(service.pid)}
        warm = max(1, requests // 10)
        warmup = asyncio.run(drive(service.url, names, texts, concurrency, warm, seconds=max_seconds))
        rss["after_warmup"] = resident_mb(service.pid)
        stats = asyncio.run(drive(service.url, names, texts, concurrency, requests - warm, seconds=max_seconds))
        rss["end"] = resident_mb(service.pid)
        metrics = httpx.get(f"{service.url}/metrics").text

    def total(metric: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(metric + "{"))

    shadow = {"compared": total("slimserve_shadow_inputs_total"), "agreed": total("slimserve_shadow_agreements_total"),
              "dropped": total("slimserve_shadow_dropped_total")}
    statuses: dict[str, int] = {}
    for phase in (warmup, stats):
        for status, count in phase.statuses.items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    growth = (rss["end"] - rss["after_warmup"]) / rss["after_warmup"]
    errors = sum(count for status, count in statuses.items() if status not in ("200", "429"))
    measured = stats.summary()  # latency and throughput after warm-up
    result = {"models": names, "requests": requests, "concurrency": concurrency, "statuses": statuses,
              "errors_other_than_429": errors, "p50_ms": measured["p50_ms"], "p99_ms": measured["p99_ms"],
              "throughput_rps": measured["throughput_rps"], "rss_mb": rss, "rss_growth_after_warmup": round(growth, 4),
              "shadow": shadow, "targets_met": errors == 0 and growth < 0.05}
    print(f"{'variants':<28}{', '.join(names)}")
    print(f"{'requests / clients':<28}{requests} / {concurrency} (warm-up {warm})")
    print(f"{'statuses':<28}{statuses}")
    print(f"{'p50 / p99 ms after warm-up':<28}{result['p50_ms']} / {result['p99_ms']}")
    print(f"{'throughput req/s':<28}{result['throughput_rps']}")
    print(f"{'RSS MB start/warm/end':<28}{rss['start']} / {rss['after_warmup']} / {rss['end']} "
          f"(growth after warm-up {growth:+.2%})")
    print(f"{'shadow compared / agreed':<28}{shadow['compared']:.0f} / {shadow['agreed']:.0f} "
          f"(dropped under load: {shadow['dropped']:.0f})")
    print(f"{'targets met':<28}{result['targets_met']}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["targets_met"] else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--models", default="", help="comma-separated; default every ready model")
    p.add_argument("--concurrency", type=int, help="clients (default 4; --soak: 64)")
    p.add_argument("--rate", type=float, default=0.0, help="requests per second over all clients; 0: unlimited")
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0: until stopped")
    p.add_argument("--texts", type=Path, help="a TSV whose first column is text (header skipped)")
    p.add_argument("--soak", action="store_true", help="start the service and soak it (see above)")
    p.add_argument("--models-dir", type=Path, default=ROOT / "models", help="--soak: the variants to serve")
    p.add_argument("--requests", type=int, default=20_000, help="--soak: requests in all")
    p.add_argument("--max-seconds", type=float, default=1200, help="--soak: stop each phase after this long")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    if args.concurrency is None:
        args.concurrency = 64 if args.soak else 4
    if args.concurrency < 1 or args.rate < 0 or args.duration < 0 or args.requests < 10:
        print("load.py: --concurrency must be ≥ 1, --rate and --duration ≥ 0, --requests ≥ 10", file=sys.stderr)
        sys.exit(2)
    if args.soak:
        texts = read_texts(args.texts or (SHARED / "data" / "sst2" / "dev.tsv" if SHARED.exists() else None))
        sys.exit(soak(args.models_dir, texts, args.requests, args.concurrency, args.max_seconds, args.out))
    models = [m for m in args.models.split(",") if m] or None
    try:
        asyncio.run(steady(args.url, models, read_texts(args.texts), args.concurrency, args.rate, args.duration))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
