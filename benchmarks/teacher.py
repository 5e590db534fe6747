"""Compress the fine-tuned SST-2 teacher with the default recipes and static int8, and
compare them, through ONNX Runtime, with Optimum's per-channel int8 (see common.py).

    python benchmarks/teacher.py [--shared ../shared] [--threads 2] [--out benchmarks/results]

Prints a table with ratios against the fp32 original (one run, same machine, same
threads) and writes benchmarks/results/teacher.json.
"""

from __future__ import annotations

import json

from common import BASELINE, optimum_int8, shared_paths
from common import parser as common_parser

from compressor.checkpoint import load_classifier
from compressor.data import read_tsv
from compressor.evaluate import evaluate_all
from compressor.pipeline import DEFAULT_RECIPES, Recipe, build

# Static int8 fixes its activation ranges on SST-2 train text (no labels read).
RECIPES = DEFAULT_RECIPES + (Recipe("int8-static", quantize="int8-static"),)


def main() -> None:
    parser = common_parser(__doc__)
    args = parser.parse_args()
    teacher, train, dev = shared_paths(args.shared, "benchmarks/teacher.py")

    models = args.out / "teacher-models"
    classifier = load_classifier(str(teacher))
    calibration = read_tsv(train).texts
    for recipe in RECIPES:
        build(classifier, recipe, models, calibration)
    optimum_int8(models / "original", teacher, models)

    names = [r.name for r in RECIPES] + [BASELINE]
    results = evaluate_all([models / n for n in names], dev, models / "original", args.threads)
    base = results[0]
    for r in results:
        r["size_ratio"] = round(base["onnx_bytes"] / r["onnx_bytes"], 2)
        for batch in ("batch_1", "batch_32"):
            r[f"speedup_{batch}"] = round(base["latency_ms"][batch]["p50"] / r["latency_ms"][batch]["p50"], 2)
    print(f"SST-2 dev ({base['examples']} rows), teacher {teacher.name}, ONNX Runtime {args.threads} threads; "
          "ratios against the fp32 original in this run")
    print(f"{'variant':<14}{'accuracy':>9}{'agree':>8}{'smaller':>9}{'b1 faster':>11}{'b32 faster':>12}{'MB':>8}")
    for r in results:
        print(f"{r['variant']:<14}{r['accuracy']:>9.4f}{r['agreement']:>8.4f}{r['size_ratio']:>8.2f}x"
              f"{r['speedup_batch_1']:>10.2f}x{r['speedup_batch_32']:>11.2f}x{r['onnx_bytes'] / 1e6:>8.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "teacher.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'teacher.json'}")


if __name__ == "__main__":
    main()
