"""Variants timed in turn, round after round, so that a host whose speed drifts over
minutes slows each of them alike; `compressor evaluate` times one variant after another.

    python benchmarks/interleaved.py [--models models] [--reference original] [--rounds 5]
                                     [--out benchmarks/results]

Each variant is opened as `compressor evaluate` opens it (its recorded runtime and threads,
tokenizing and padding as the service does) and timed on the shipped SST-2 dev sentences
with variant.measure.latency: a short burst per batch size per round, every variant in
each round. A variant's figure is the median of its rounds' p50s; its speed-up is the
reference's figure over its own. Needs no ../shared: `make variants` builds the models.
Prints a table and writes benchmarks/results/interleaved.json.
"""

from __future__ import annotations

import json
import statistics
from datetime import date
from pathlib import Path

from common import ROOT
from common import parser as common_parser

from compressor.data import read_tsv
from compressor.evaluate import open_variant
from variant import measure
from variant.manifest import MANIFEST_FILE

DEV = ROOT / "compressor" / "default" / "sst2-dev.tsv"
BURST = {1: 40, 32: 6}  # timed runs per batch size in one round


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--reference", default="original", help="the variant speed-ups are taken against")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folders = sorted(f for f in args.models.iterdir() if (f / MANIFEST_FILE).exists())
    opened = {f.name: open_variant(f, args.threads) for f in folders}
    if args.reference not in opened:
        parser.error(f"no variant {args.reference!r} under {args.models}")
    texts = read_tsv(DEV).inputs()
    rounds: dict[str, dict[int, list[float]]] = {name: {size: [] for size in BURST} for name in opened}
    for _ in range(args.rounds):
        for name, variant in opened.items():
            for size, ms in measure.latency(variant, texts, tuple(BURST), BURST).items():
                rounds[name][size].append(ms["p50"])
    p50 = {name: {size: statistics.median(times) for size, times in by_size.items()} for name, by_size in rounds.items()}
    base = p50[args.reference]
    rows = [{"variant": name, "runtime": opened[name].backend.runtime.label(),
             **{f"batch_{size}_ms": round(ms, 2) for size, ms in by_size.items()},
             **{f"faster_b{size}": round(base[size] / ms, 3) for size, ms in by_size.items()}}
            for name, by_size in p50.items()]
    print(f"{'variant':<16} {'b1 ms':>8} {'b32 ms':>8} {'faster b1':>10} {'faster b32':>11}")
    for r in rows:
        print(f"{r['variant']:<16} {r['batch_1_ms']:>8.2f} {r['batch_32_ms']:>8.1f} {r['faster_b1']:>9.2f}x "
              f"{r['faster_b32']:>10.2f}x")
    result = {"command": f"python benchmarks/interleaved.py --rounds {args.rounds} --threads {args.threads}",
              "date": date.today().isoformat(), "reference": args.reference, "rounds": args.rounds,
              "burst": BURST, "threads": args.threads, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "interleaved.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
