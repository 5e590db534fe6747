"""Every offline method on the fine-tuned SST-2 teacher, at several budgets, with and
without int8, against the fp32 teacher and Optimum's per-channel int8 (see common.py).

    python benchmarks/methods.py [--methods svd,svd-aware,...] [--ratios 0.75,0.5,0.25]
                                 [--quantizations int8] [--runtimes openvino/f32,openvino/bf16]
                                 [--search latency:1,size:1.5] [--threads 2] [--out benchmarks/results]

Each compressed model is exported in fp32 and once per --quantizations entry (int8,
int8-static, int8-nncf, int4 and its options); the teacher itself is too. The teacher's
exports that OpenVINO can read (fp32 and the int8 kinds) are measured once more on each
--runtimes entry: a row named `EXPORT.ov-bf16` is the same files with another
runtime in the manifest. --search adds the variant `compressor search` picks for each
OBJECTIVE:BOUND (accuracy points, scored on SST-2 dev, so a user's own validation split
plays that role).

Calibration: SST-2 train, text only (the methods sample from it; no labels are read).
Evaluation: SST-2 dev. Each method compresses once; the fp32 and int8 variants are two
exports of that one model. Writes benchmarks/results/NAME/{report.md, report.json,
pareto.png} through `compressor report`'s code, a copy of the JSON as
benchmarks/results/NAME.json (NAME defaults to methods), and prints the table.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

from common import BASELINE, optimum_int8, shared_paths
from common import parser as common_parser

from compressor.checkpoint import load_classifier
from compressor.data import read_tsv
from compressor.pipeline import Recipe, apply_methods, build, export
from compressor.report import measure, variant_folders, write_report
from compressor.search import search
from variant.manifest import Runtime, read_manifest, write_manifest

METHODS = ("svd", "svd-aware", "asvd", "fwsvd", "prune", "embed-ae", "ae", "ae-shared", "ae-linear", "ae-linear-shared",
           "kronecker", "tucker")
RATIOS = (0.75, 0.5, 0.25)
# Pipelines with a budget per step, aimed at the targets (2x fewer FLOPs; 8x smaller).
PIPELINES = {"prune60-aware85": "prune@0.6+svd-aware@0.85", "prune70-embed50": "prune@0.7+embed-ae@0.5",
             "aware60-embed40": "svd-aware@0.6+embed-ae@0.4",
             # Just past 2x fewer FLOPs, for the FLOPs target (run with --allocation sensitivity).
             "prune62-aware80": "prune@0.62+svd-aware@0.8", "prune55-aware90": "prune@0.55+svd-aware@0.9",
             # About 11M parameters left: 8x smaller than the fp32 file once int8 (the size target).
             "prune62-embed40": "prune@0.62+embed-ae@0.4", "prune66-embed35": "prune@0.66+embed-ae@0.35",
             # For 4-bit weights, where the embedding table is most of what is left.
             "embed50": "embed-ae@0.5", "embed30": "embed-ae@0.3", "prune62-embed30": "prune@0.62+embed-ae@0.3",
             # The size ladder's rungs that 4-bit rounding decides (int4's gptq option against min-max and HQQ).
             "prune75-embed40": "prune@0.75+embed-ae@0.4",
             # The embedding table at 2 bits with hot rows against embed-ae's latents (int4's emb2 and hotN).
             "prune75": "prune@0.75", "prune75-embed80": "prune@0.75+embed-ae@0.8"}


def on_runtime(models: Path, name: str, runtime: Runtime) -> None:
    """`name`'s files once more as `NAME.BACKEND-PRECISION`, recorded for `runtime`."""
    target = models / f"{name}.{runtime.backend.replace('openvino', 'ov')}-{runtime.precision}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(models / name, target)
    manifest = read_manifest(target)
    manifest.name, manifest.runtime = target.name, runtime
    write_manifest(target, manifest)


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    parser.add_argument("--pipelines", default="prune60-aware85,prune70-embed50,aware60-embed40",
                        help="names from PIPELINES, or ''")
    parser.add_argument("--allocation", default="uniform", help="uniform or sensitivity (SVD family)")
    parser.add_argument("--quantizations", default="int8", help="exports of every model besides fp32, comma-separated")
    parser.add_argument("--runtimes", default="openvino/f32,openvino/bf16",
                        help="BACKEND/PRECISION rows for the teacher's exports, besides onnxruntime/f32")
    parser.add_argument("--search", default="", help="OBJECTIVE:BOUND entries for `compressor search`, e.g. size:1.5")
    parser.add_argument("--name", default="methods", help="results go to OUT/NAME and OUT/NAME-models")
    args = parser.parse_args()
    teacher, train, dev = shared_paths(args.shared, "benchmarks/methods.py")

    models = args.out / f"{args.name}-models"
    classifier = load_classifier(str(teacher))
    calibration = read_tsv(train).texts
    quantizations = [q for q in args.quantizations.split(",") if q]
    build(classifier, Recipe("original"), models)
    for quantize in dict.fromkeys(["int8", *quantizations]):
        build(classifier, Recipe(quantize, quantize=quantize), models, calibration)
    optimum_int8(models / "original", teacher, models)
    suffix = "-sens" if args.allocation == "sensitivity" else ""
    recipes = [(f"{m}-{round(100 * r)}{suffix}", m, r) for m in filter(None, args.methods.split(","))
               for r in map(float, args.ratios.split(","))]
    recipes += [(name + suffix, PIPELINES[name], 1.0) for name in filter(None, args.pipelines.split(","))]
    for name, method, ratio in recipes:
        recipe = Recipe(name, method, ratio, allocation=args.allocation)
        compressed, settings = apply_methods(classifier, recipe, calibration)
        print(f"{name}: compressed in {settings['compress_seconds']} s", file=sys.stderr)
        export(classifier, compressed, settings, recipe, models, calibration)
        for quantize in quantizations:
            export(classifier, compressed, settings, replace(recipe, name=f"{name}-{quantize}", quantize=quantize),
                   models, calibration)
    for entry in filter(None, args.search.split(",")):
        objective, bound = entry.split(":")
        manifest, trail = search(str(teacher), f"search-{objective}-{bound}", models, float(bound), read_tsv(dev),
                                 calibration, objective, threads=args.threads,
                                 report=lambda line: print(line, file=sys.stderr))
        print(f"search {objective} within {bound} points: {manifest.method} on {manifest.runtime.label()} "
              f"after {len(trail)} candidates", file=sys.stderr)
    for export_name in ["original", *[q for q in quantizations if q.startswith("int8")]]:
        for label in filter(None, args.runtimes.split(",")):
            backend, precision = label.split("/")
            on_runtime(models, export_name, Runtime(backend=backend, precision=precision))

    results = measure(variant_folders(models), dev, models / "original", args.threads)
    order = {"original": 0, "int8": 1, BASELINE: 2}
    results.sort(key=lambda r: (order.get(r["variant"], 3), r["method"], -r["parameters"]))
    write_report(results, args.out / args.name, f"Offline methods on the SST-2 teacher ({dev.name}, {args.allocation} ranks)")
    shutil.copy(args.out / args.name / "report.json", args.out / f"{args.name}.json")  # e.g. results/methods.json
    print((args.out / args.name / "report.md").read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    main()
