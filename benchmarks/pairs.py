"""Every method on a sentence-pair teacher (MiniLM fine-tuned on MRPC, made by
benchmarks/pair_teacher.py), calibrated on the pairs as the model sees them against
calibrated on the first sentences alone.

    python benchmarks/pairs.py [--methods svd-aware,prune,...] [--ratios 0.75,0.5] [--threads 2]

Calibration: MRPC train, no labels read; "pair" calibration gives the methods both
sentences of each row (`--text-pair-col`), "single" only the first (what a
single-column calibration file gives). Methods that read no calibration text are built
once. Evaluation: MRPC dev, agreement against the teacher's fp32 export; Optimum's
per-channel dynamic int8 is a row, as in every compression benchmark. Prints a table and
writes benchmarks/results/pairs.json.
"""

from __future__ import annotations

import json
import sys

from common import BASELINE, optimum_int8
from common import parser as common_parser
from pair_teacher import COLUMNS, mrpc_paths

from compressor.checkpoint import load_classifier
from compressor.data import read_calibration
from compressor.evaluate import evaluate_all
from compressor.pipeline import Recipe, build
from compressor.recipe import METHODS

CALIBRATED = ("svd-aware", "asvd", "fwsvd", "prune", "drop-layers", "embed-ae")  # read calibration text
# The calibrated methods first, then the others (the autoencoders train longest).
ORDER = CALIBRATED + tuple(m for m in METHODS if m not in CALIBRATED)
RATIOS = (0.75, 0.5)


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--methods", default=",".join(ORDER))
    parser.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    args = parser.parse_args()
    train, dev = mrpc_paths(args.shared)
    teacher = args.out / "pair-models" / "teacher"
    if not (teacher / "config.json").is_file():
        print(f"benchmarks/pairs.py: needs the MRPC teacher at {teacher}; run benchmarks/pair_teacher.py",
              file=sys.stderr)
        sys.exit(2)
    models = args.out / "pair-models" / "variants"
    classifier = load_classifier(str(teacher))
    calibrations = {"pair": read_calibration(train, COLUMNS["text_col"], COLUMNS["pair_col"]),
                    "single": read_calibration(train, COLUMNS["text_col"])}

    def measure(name: str, method: str, how: str, ratio: float | None) -> None:
        """Evaluate one variant against the teacher's export; rewrite the table and the JSON."""
        [r] = evaluate_all([models / name], dev, models / "original", args.threads, COLUMNS["text_col"],
                           COLUMNS["pair_col"], COLUMNS["label_col"], cascades=False)
        base = r if name == "original" else table[0]
        table.append({"variant": name, "method": method, "ratio": ratio, "calibration": how,
                      "accuracy": r["accuracy"], "delta_points": round((r["accuracy"] - base["accuracy"]) * 100, 2),
                      "agreement": r["agreement"], "onnx_bytes": r["onnx_bytes"], "latency_ms": r["latency_ms"],
                      "smaller": round(base["onnx_bytes"] / r["onnx_bytes"], 2),
                      "faster_b32": round(base["latency_ms"]["batch_32"]["p50"] / r["latency_ms"]["batch_32"]["p50"], 2)})
        t = table[-1]
        print(f"{t['variant']:<26}{t['calibration']:>12}{t['accuracy']:>10.4f}{t['delta_points']:>+10.2f}"
              f"{t['agreement']:>8.4f}{t['smaller']:>8.2f}x{t['faster_b32']:>11.2f}x", flush=True)
        out.write_text(json.dumps({"dev_rows": r["examples"], "threads": args.threads, "rows": table}, indent=2) + "\n",
                       encoding="utf-8")

    table: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "pairs.json"
    print(f"MRPC dev, ONNX Runtime {args.threads} threads; ratios against the teacher's fp32 export in this run")
    print(f"{'variant':<26}{'calibration':>12}{'accuracy':>10}{'Δ points':>10}{'agree':>8}{'smaller':>9}"
          f"{'b32 faster':>12}")
    build(classifier, Recipe("original"), models, calibrations["pair"])
    measure("original", "none", "-", None)
    optimum_int8(models / "original", teacher, models)
    measure(BASELINE, BASELINE, "-", None)
    build(classifier, Recipe("int8", quantize="int8"), models)
    measure("int8", "int8", "-", None)
    for how, texts in calibrations.items():
        build(classifier, Recipe(f"int8-static.{how}", quantize="int8-static"), models, texts)
        measure(f"int8-static.{how}", "int8-static", how, None)
    for method in args.methods.split(","):
        for ratio in map(float, args.ratios.split(",")):
            for how in (("pair", "single") if method in CALIBRATED else ("-",)):
                name = f"{method}{round(ratio * 100)}.{how}".replace(".-", "")
                build(classifier, Recipe(name, method, ratio), models, calibrations.get(how))
                measure(name, method, how, ratio)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
