"""`compressor search` on the SST-2 teacher, its whole trail kept.

    python benchmarks/search.py [--shared ../shared] [--objective latency] [--batch mix]
                                [--time-budget 900] [--max-drop 1] [--min-speedup X]
                                [--calibration-texts 1000] [--result search-threads.json]
                                [--out benchmarks/results]

Needs ../shared (the teacher, SST-2 train for calibration, dev for accuracy). Runs the
search as a user would (the same function the CLI calls), within a wall-clock budget,
with the thread budget of `--threads`: every runtime here at all threads per run and at
one thread per run with runs side by side. Prints the trail and writes
benchmarks/results/RESULT (search-threads.json by default): the chosen candidate, its recorded runtime and
threads, and every candidate tried (recipe, runtime, threads per run, accuracy,
speed-ups at batch 1 and 32 against the fp32 export timed beside it, batch variation,
and whether it held).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

from common import parser as common_parser
from common import shared_paths

from compressor.data import read_tsv
from compressor.search import best, search


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--batch", default="mix", help="batch profile: 1, 32 or mix")
    parser.add_argument("--time-budget", type=float, default=900, help="wall-clock seconds for the whole search")
    parser.add_argument("--max-drop", type=float, default=1.0, help="accuracy points a candidate may lose")
    parser.add_argument("--calibration-texts", type=int, default=1000, help="SST-2 train sentences to calibrate on")
    parser.add_argument("--objective", default="latency", choices=("latency", "size"))
    parser.add_argument("--min-speedup", type=float, help="skip size rungs slower than this many times the original")
    parser.add_argument("--result", default="search-threads.json", help="file name under --out")
    args = parser.parse_args()
    teacher, train, dev = shared_paths(args.shared, "benchmarks/search.py")
    calibration = read_tsv(train).texts[:args.calibration_texts]
    command = (f"python benchmarks/search.py --objective {args.objective} --batch {args.batch} "
               f"--time-budget {args.time_budget:g} --max-drop {args.max_drop:g} --threads {args.threads}"
               + (f" --min-speedup {args.min_speedup:g}" if args.min_speedup else "")
               + f" --result {args.result}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as out:
        manifest, trail = search(str(teacher), "chosen", Path(out), args.max_drop, data=read_tsv(dev),
                                 calibration=calibration, objective=args.objective, batch=args.batch,
                                 time_budget=args.time_budget, threads=args.threads, min_speedup=args.min_speedup)
    seconds = round(time.monotonic() - started, 1)
    runtime, winner = manifest.runtime, best(trail, args.objective)  # None: nothing held, the plain export
    result = {
        "command": command, "date": date.today().isoformat(), "objective": args.objective, "batch": args.batch,
        "threads": args.threads, "time_budget": args.time_budget, "seconds": seconds, "max_drop": args.max_drop,
        "min_speedup": args.min_speedup, "reference_onnx_bytes": manifest.search.get("reference_onnx_bytes"),
        "reference_accuracy": manifest.search["reference_score"],
        "reference_latency_ms": manifest.search["reference_latency_ms"],
        "chosen": {"recipe": winner.recipe if winner else "none",
                   "runtime": runtime.label(), "threads": runtime.threads, "accuracy": manifest.search["score"],
                   "onnx_bytes": manifest.onnx_bytes,
                   "speedups": runtime.model_extra.get("speedups"), "batch_invariant": manifest.batch_invariant},
        "trail": [{k: v for k, v in {**asdict(a), "recipe": a.recipe}.items() if v not in (None, "", {})}
                  for a in trail],
    }
    print(json.dumps(result["chosen"], indent=2))
    print(f"{len(trail)} candidates in {seconds} s (budget {args.time_budget:g} s)", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.result).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
